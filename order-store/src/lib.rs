//! What `order-api` and `order-ingest` share, in two halves.
//!
//! **Storage**, the only part of the service that speaks SQL: the order model ([`models`]),
//! the diesel schema ([`schema`]), the repository over `orderdb.orders` ([`orders`]), the
//! change outbox ([`outbox`]), reads on a replica with read-your-writes tokens
//! ([`replication`]), the embedded migrations ([`migrations`]), the connection pool and its
//! flags ([`db`]) and the storage errors ([`error`]).
//!
//! **Process runtime** ([`runtime`]), what both binaries do alike at run time: signals and
//! shutdown, logs, telemetry, TLS, the shared Prometheus series, and the health, readiness and
//! metrics endpoints both serve.
//!
//! Test support lives in the dev-only `order-test-support` crate, out of production's reach.

// Storage.
pub mod db;
pub mod error;
pub mod migrations;
pub mod models;
pub mod orders;
pub mod outbox;
pub mod replication;
pub mod schema;

// Process runtime.
pub mod runtime;

pub use bigdecimal::BigDecimal;
pub use db::{build_pool, prepare_database, DbArgs, Pool, PooledConn};
// `AsyncConnection` is the trait of `transaction`, for callers that group store calls into one.
pub use diesel_async::{AsyncConnection, AsyncPgConnection};
pub use error::{FieldError, StoreError};
pub use models::{
    AppliedDiscount, CustomerSnapshot, DeliveryAddress, FulfillmentDetails, FulfillmentType,
    LineItem, NewOrder, Order, OrderStatus, ParseEnumError, PaymentStatus,
};

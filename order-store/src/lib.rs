//! The order service's storage: the order model, the repository over `orderdb.orders`, the
//! connection pool and the embedded migrations. Shared by `order-api` and `order-ingest`, and
//! the only crate that speaks SQL.

pub mod db;
pub mod error;
pub mod metrics;
pub mod migrations;
pub mod models;
pub mod orders;
pub mod outbox;
pub mod process;
pub mod replication;
pub mod schema;
pub mod telemetry;
pub mod tls;

pub use bigdecimal::BigDecimal;
pub use db::{build_pool, prepare_database, DbArgs, Pool, PooledConn};
// `AsyncConnection` is the trait of `transaction`, for callers that group store calls into one.
pub use diesel_async::{AsyncConnection, AsyncPgConnection};
pub use error::{FieldError, StoreError};
pub use models::{
    AppliedDiscount, CustomerSnapshot, DeliveryAddress, FulfillmentDetails, FulfillmentType,
    LineItem, NewOrder, Order, OrderStatus, ParseEnumError, PaymentStatus,
};

//! order-api: the REST and GraphQL API over `orderdb`, a drop-in for the existing
//! order-service's clients (docs/compatibility.md §3-§5). A library so that tests can build the exact routes
//! the binary serves.

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod graphql;
pub mod layers;
pub mod metrics;
pub mod openapi;
pub mod replica;
pub mod routes;
pub mod service;
pub mod shared_reads;
pub mod state;
pub mod streaming;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;

pub use crate::state::{AppState, Limits, ReadReplicaConfig};

/// Binds `addr` and returns the bound address and the server future, which ends once
/// `shutdown` resolves and in-flight requests have drained.
pub fn serve(
    state: &AppState,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()>), warp::Error> {
    warp::serve(routes::routes(state)).try_bind_with_graceful_shutdown(addr, shutdown)
}

//! order-api: the REST and GraphQL API over `orderdb`, a drop-in for the existing
//! order-service's clients (CONTRACT 3-5). A library so that tests can build the exact routes
//! the binary serves.

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod filters;
pub mod graphql;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use order_store::Pool;

use crate::auth::Auth;
use crate::db::Db;
use crate::graphql::OrderSchema;
use crate::metrics::Metrics;

/// Everything a request needs; cheap to clone (shared handles only).
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub schema: OrderSchema,
    pub graphql_documents: Arc<graphql::DocumentCache>,
    pub max_body_bytes: u64,
    pub pool_max: u32,
}

/// Settings of [`AppState`] that are not handles.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub pool_max: u32,
    pub db_op_timeout: Duration,
}

impl AppState {
    pub fn new(pool: Pool, auth: Auth, limits: Limits) -> Self {
        let db = Db::new(pool, limits.db_op_timeout);
        Self {
            schema: graphql::schema(db.clone()),
            graphql_documents: Arc::default(),
            db,
            auth: Arc::new(auth),
            metrics: Arc::new(Metrics::default()),
            max_body_bytes: limits.max_body_bytes,
            pool_max: limits.pool_max,
        }
    }
}

/// Binds `addr` and returns the bound address and the server future, which ends once
/// `shutdown` resolves and in-flight requests have drained.
pub fn serve(
    state: &AppState,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()>), warp::Error> {
    warp::serve(filters::routes(state)).try_bind_with_graceful_shutdown(addr, shutdown)
}

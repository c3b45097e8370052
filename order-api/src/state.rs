//! What every request shares: handles and limits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use order_store::Pool;

use crate::auth::Auth;
use crate::db::Db;
use crate::graphql::{self, OrderSchema};
use crate::metrics::Metrics;

/// Everything a request needs; cheap to clone (shared handles only).
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub graphql: Arc<graphql::Executor>,
    pub max_body_bytes: u64,
    pub pool_max: u32,
    /// Set on SIGTERM: readiness answers 503 from then on while requests are still served.
    draining: Arc<AtomicBool>,
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
            graphql: Arc::new(graphql::Executor::new(graphql::schema(db.clone()))),
            db,
            auth: Arc::new(auth),
            metrics: Arc::new(Metrics::default()),
            max_body_bytes: limits.max_body_bytes,
            pool_max: limits.pool_max,
            draining: Arc::default(),
        }
    }

    /// From now on readiness answers 503, so that load balancers stop routing here.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The GraphQL schema, for introspection by tests and tools.
    pub fn schema(&self) -> &OrderSchema {
        self.graphql.schema()
    }
}

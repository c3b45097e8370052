//! What every request shares: handles and limits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use order_store::db::OnOff;
use order_store::{build_pool, DbArgs, Pool};

use crate::auth::Auth;
use crate::db::{Db, ReadCounters};
use crate::graphql::{self, OrderSchema};
use crate::metrics::Metrics;
use crate::replica::ReadReplica;

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

/// The optional read replica's pools and settings.
pub struct ReadReplicaConfig {
    /// The pool reads use.
    pub pool: Pool,
    /// How many of `pool`'s connections single-statement reads share.
    pub shared_reads: u32,
    /// A pool of one connection for the monitor's probes.
    pub probe_pool: Pool,
    /// Reads go to the primary while the replica lags more than this.
    pub max_lag: Duration,
}

impl ReadReplicaConfig {
    /// The pools of the replica `args` names, built with the primary's pool builder (same TLS
    /// and prepared-statement handling); nothing is connected yet. A URL or TLS set-up that
    /// cannot work is an error here, so that the binary refuses to start with it.
    pub fn build(args: &DbArgs, max_lag: Duration) -> Result<Self, String> {
        let (_, params) = order_store::runtime::tls::split_pg_url(&args.database_url)
            .map_err(|e| e.to_string())?;
        order_store::runtime::tls::PgConnector::new(&params).map_err(|e| e.to_string())?;
        let probe = DbArgs {
            db_pool_size: 1,
            ..args.clone()
        };
        Ok(Self {
            pool: build_pool(args, "order-api-reads"),
            shared_reads: shared_read_connections(args),
            probe_pool: build_pool(&probe, "order-api-replica-monitor"),
            max_lag,
        })
    }
}

/// How many of the pool's connections single-statement reads share ([`SharedReads`]): half
/// of the pool, the rest left to transactions, listings and changes; none when prepared
/// statements are off (a connection then serves one statement at a time) or the pool has one
/// connection.
///
/// [`SharedReads`]: crate::shared_reads::SharedReads
pub fn shared_read_connections(args: &DbArgs) -> u32 {
    if args.db_prepared_statements == OnOff::On {
        args.db_pool_size / 2
    } else {
        0
    }
}

/// Settings of [`AppState`] that are not handles.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub pool_max: u32,
    /// [`shared_read_connections`] of the primary's pool.
    pub shared_reads: u32,
    pub db_op_timeout: Duration,
}

impl Limits {
    /// The limits `config` sets.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            max_body_bytes: config.max_body_bytes,
            pool_max: config.db.db_pool_size,
            shared_reads: shared_read_connections(&config.db),
            db_op_timeout: config.db_query_timeout(),
        }
    }
}

impl AppState {
    /// Everything on the primary `pool`.
    pub fn new(pool: Pool, auth: Auth, limits: Limits) -> Self {
        Self::with_read_replica(pool, None, auth, limits)
    }

    /// Writes on the primary `pool`, reads on the replica while it can serve them. Starts the
    /// replica's monitor, so it must run inside the tokio runtime.
    pub fn with_read_replica(
        pool: Pool,
        replica: Option<ReadReplicaConfig>,
        auth: Auth,
        limits: Limits,
    ) -> Self {
        let metrics = Metrics::default();
        let replica = replica.map(|r| {
            ReadReplica::start(
                r.pool,
                r.shared_reads,
                r.probe_pool,
                r.max_lag,
                metrics.replica_gauges(),
            )
        });
        let reads = ReadCounters::new(metrics.reads());
        let db = Db::new(
            pool,
            limits.shared_reads,
            limits.db_op_timeout,
            replica,
            reads,
        );
        Self {
            graphql: Arc::new(graphql::Executor::new(graphql::schema(db.clone()))),
            db,
            auth: Arc::new(auth),
            metrics: Arc::new(metrics),
            max_body_bytes: limits.max_body_bytes,
            pool_max: limits.pool_max,
            draining: Arc::default(),
        }
    }

    /// This state for one read request: reads routed with the client's consistency token.
    #[must_use]
    pub fn for_reads(&self, after: Option<u64>) -> Self {
        let mut state = self.clone();
        state.db = self.db.for_reads(after);
        state
    }

    /// This state for one request that changes data: everything on the primary, and the
    /// consistency token of its changes kept for the response.
    #[must_use]
    pub fn for_changes(&self) -> Self {
        let mut state = self.clone();
        state.db = self.db.for_changes();
        state
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

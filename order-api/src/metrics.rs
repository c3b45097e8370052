//! Prometheus metrics, on the `prometheus` crate with a [`Registry`] of their own per
//! [`Metrics`] value (never the crate's global one): a request counter and latency histogram per
//! route, method and status; the pool's connections in use and idle, its size, and how often and
//! how long checkouts waited (read from bb8 at scrape time); the read replica's state and where
//! reads went ([`crate::replica`]); and the build. The names, labels,
//! types and buckets are those the dashboard and alerts of deploy/observability query, and the
//! README's metrics table lists them (.ci/check-observability-metrics compares both).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use warp::http::StatusCode;

use order_store::runtime::metrics::{register, register_build_info, PoolWaits};
use order_store::Pool;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::replica::ReplicaGauges;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Everything `/metrics` reports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    pool_connections: IntGaugeVec,
    pool_max: IntGauge,
    pool_waits: PoolWaits,
    replica: ReplicaGauges,
    reads: IntCounterVec,
    /// One scrape at a time: the scrape-time values are set, then gathered.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let labels = ["route", "method", "status"];
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "http_requests_total",
                    "HTTP requests by route, method and status.",
                ),
                &labels,
            ),
        );
        let durations = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time to the response head, by route, method and status.",
                )
                .buckets(BUCKETS.to_vec()),
                &labels,
            ),
        );
        let pool_connections = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "db_pool_connections",
                    "Database connections of this process.",
                ),
                &["state"],
            ),
        );
        let pool_max = register(
            &registry,
            IntGauge::new("db_pool_max_connections", "Largest pool size."),
        );
        let pool_waits = PoolWaits::register(&registry);
        let replica = ReplicaGauges {
            up: register(
                &registry,
                IntGauge::new(
                    "order_api_read_replica_up",
                    "Whether the read replica answers (1) or not (0); 0 when none is configured.",
                ),
            ),
            lag_seconds: register(
                &registry,
                Gauge::new(
                    "order_api_read_replica_lag_seconds",
                    "How far the read replica's reads were behind the primary at its last answer (+Inf: unknown while WAL is pending).",
                ),
            ),
        };
        let reads = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "order_api_db_reads_total",
                    "Database reads by the server that served them and why it was chosen.",
                ),
                &["target", "reason"],
            ),
        );
        register_build_info(&registry, env!("CARGO_PKG_VERSION"));
        Self {
            registry,
            requests,
            durations,
            pool_connections,
            pool_max,
            pool_waits,
            replica,
            reads,
            scrape: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// The gauges the read replica's monitor sets.
    pub fn replica_gauges(&self) -> ReplicaGauges {
        self.replica.clone()
    }

    /// `order_api_db_reads_total`, for [`crate::db::ReadCounters`].
    pub fn reads(&self) -> &IntCounterVec {
        &self.reads
    }

    pub fn observe(
        &self,
        route: &'static str,
        method: &str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        // `as_str` is the code's digits from a static table: no string made per request.
        let labels = [route, method, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.durations
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, pool: &Pool, pool_max: u32) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        let state = pool.state();
        let idle = state.idle_connections;
        let in_use = state.connections.saturating_sub(idle);
        self.pool_connections
            .with_label_values(&["in_use"])
            .set(i64::from(in_use));
        self.pool_connections
            .with_label_values(&["idle"])
            .set(i64::from(idle));
        self.pool_max.set(i64::from(pool_max));
        self.pool_waits.set(pool);
        let mut out = String::with_capacity(8192);
        // Only fails on a malformed family, which the registry never builds.
        let _ = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

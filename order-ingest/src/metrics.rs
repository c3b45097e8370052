//! Counters, the batch-latency histogram, and the server of the health and metrics endpoints.
//!
//! The exposition is the `prometheus` crate's, from a [`Registry`] of each [`Metrics`] value's
//! own (never the crate's global one, so tests run several consumers in one process): what the
//! loop counts, plus what a scrape reads from outside (Redis reachability, the group's pending
//! entries and lag from `XINFO GROUPS`, the pool's checkout waits from bb8). The names, labels,
//! types and buckets are those deploy/observability queries, and the README's metrics table
//! lists them (.ci/check-observability-metrics compares both).

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use order_store::runtime::health;
use order_store::runtime::metrics::{register, register_build_info, PoolWaits};
use order_store::Pool;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::sync::Mutex;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::event::ErrorClass;
use crate::stream::RedisConn;

/// Upper bounds (seconds) of the batch-latency buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The Redis commands the consumer and the probe issue: their error counters start at 0, so
/// that the first failure is an increase too.
const REDIS_COMMANDS: [&str; 8] = [
    "XGROUP",
    "XREADGROUP",
    "XPENDING",
    "XAUTOCLAIM",
    "XCLAIM",
    "XACK",
    "XADD",
    "XINFO",
];

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help))
}

/// Failed Redis commands by command name (`order_ingest_redis_errors_total{command}`); a
/// [`RedisConn`] given one counts its failures into it.
#[derive(Debug, Clone)]
pub struct RedisErrors(IntCounterVec);

impl RedisErrors {
    pub fn failed(&self, command: &str) {
        self.0.with_label_values(&[command]).inc();
    }

    pub fn get(&self, command: &str) -> u64 {
        self.0.with_label_values(&[command]).get()
    }
}

/// Everything the consumer counts. Shared by the loop and the HTTP server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub read: IntCounter,
    pub inserted: IntCounter,
    /// Order events whose order was already stored (`order_ingest_events_duplicate_total`).
    pub duplicates: IntCounter,
    pub skipped: IntCounter,
    pub retried: IntCounter,
    pub claimed: IntCounter,
    dead_lettered: IntCounterVec,
    /// 1 while the loop is backing off from a transient failure.
    degraded: IntGauge,
    batch_duration: Histogram,
    redis_errors: RedisErrors,
    redis_up: IntGauge,
    /// No labels; no child (so no series) while the group is unknown.
    group_pending: IntGaugeVec,
    /// No labels; no child (so no series) while the group or its lag is unknown.
    group_lag: IntGaugeVec,
    pool_waits: PoolWaits,
    /// The outbox relay's series (`order_outbox_*`).
    pub outbox: crate::outbox::RelayMetrics,
    /// One scrape at a time: the scrape-time values are set, then gathered.
    scrape: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let dead_lettered = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "order_ingest_events_dead_lettered_total",
                    "Entries written to the dead-letter stream, by errorClass.",
                ),
                &["error_class"],
            ),
        );
        for class in ErrorClass::ALL {
            dead_lettered.with_label_values(&[class.as_str()]);
        }
        let redis_errors = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "order_ingest_redis_errors_total",
                    "Redis commands that failed (error reply, connection failure or deadline), by command.",
                ),
                &["command"],
            ),
        );
        for command in REDIS_COMMANDS {
            redis_errors.with_label_values(&[command]);
        }
        let gauge = |name: &str, help: &str| register(r, IntGauge::new(name, help));
        let unlabelled =
            |name: &str, help: &str| register(r, IntGaugeVec::new(Opts::new(name, help), &[]));
        register_build_info(r, env!("CARGO_PKG_VERSION"));
        Self {
            read: counter(
                r,
                "order_ingest_events_read_total",
                "Stream entries read (new, pending and claimed).",
            ),
            inserted: counter(r, "order_ingest_events_inserted_total", "Orders inserted."),
            duplicates: counter(
                r,
                "order_ingest_events_duplicate_total",
                "Order events whose order was already stored.",
            ),
            skipped: counter(
                r,
                "order_ingest_events_skipped_total",
                "Entries acknowledged without an order (no payload, other event type).",
            ),
            retried: counter(
                r,
                "order_ingest_retries_total",
                "Transient failures retried after a backoff.",
            ),
            claimed: counter(
                r,
                "order_ingest_events_claimed_total",
                "Entries claimed from idle consumers.",
            ),
            dead_lettered,
            degraded: gauge(
                "order_ingest_degraded",
                "1 while the consumer is backing off from a transient failure.",
            ),
            batch_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "order_ingest_batch_duration_seconds",
                        "Time from a batch read to its acknowledgement.",
                    )
                    .buckets(BUCKETS.to_vec()),
                ),
            ),
            redis_errors: RedisErrors(redis_errors),
            redis_up: gauge(
                "order_ingest_redis_up",
                "1 when Redis answered this scrape.",
            ),
            group_pending: unlabelled(
                "order_ingest_group_pending",
                "Entries delivered to the group and not yet acknowledged.",
            ),
            group_lag: unlabelled(
                "order_ingest_group_lag",
                "Entries in the stream not yet delivered to the group.",
            ),
            pool_waits: PoolWaits::register(r),
            outbox: crate::outbox::RelayMetrics::register(r),
            scrape: std::sync::Mutex::new(()),
            registry,
        }
    }
}

impl Metrics {
    pub fn add_read(&self, n: usize) {
        self.read.inc_by(n as u64);
    }
    pub fn add_inserted(&self, n: u64) {
        self.inserted.inc_by(n);
    }
    pub fn add_already_present(&self, n: u64) {
        self.duplicates.inc_by(n);
    }
    pub fn add_skipped(&self, n: u64) {
        self.skipped.inc_by(n);
    }
    pub fn add_claimed(&self, n: usize) {
        self.claimed.inc_by(n as u64);
    }
    pub fn add_dead_letter(&self, class: ErrorClass) {
        self.dead_lettered
            .with_label_values(&[class.as_str()])
            .inc();
    }
    pub fn add_retry(&self) {
        self.retried.inc();
    }
    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.set(i64::from(degraded));
    }
    pub fn is_degraded(&self) -> bool {
        self.degraded.get() != 0
    }

    pub fn dead_lettered_total(&self) -> u64 {
        ErrorClass::ALL
            .iter()
            .map(|class| {
                self.dead_lettered
                    .with_label_values(&[class.as_str()])
                    .get()
            })
            .sum()
    }

    pub fn observe_batch(&self, elapsed: Duration) {
        self.batch_duration.observe(elapsed.as_secs_f64());
    }

    /// The counter of failed Redis commands, for [`RedisConn::count_errors`].
    pub fn redis_errors(&self) -> RedisErrors {
        self.redis_errors.clone()
    }

    /// The Prometheus text exposition (format 0.0.4): the process's own numbers, and what this
    /// scrape found: `group` as [`Probe::group_state`] answered, the outbox `backlog` (`None`:
    /// the database did not answer), and the pool's checkout waits.
    pub fn render(
        &self,
        group: Result<Option<GroupState>, ()>,
        backlog: Option<order_store::outbox::Backlog>,
        pool: &Pool,
    ) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.outbox.set_backlog(backlog);
        self.redis_up.set(i64::from(group.is_ok()));
        self.group_pending.reset();
        self.group_lag.reset();
        if let Ok(Some(group)) = group {
            self.group_pending
                .with_label_values::<&str>(&[])
                .set(group.pending as i64);
            if let Some(lag) = group.lag {
                self.group_lag
                    .with_label_values::<&str>(&[])
                    .set(lag as i64);
            }
        }
        self.pool_waits.set(pool);
        let mut out = String::with_capacity(8192);
        // Only fails on a malformed family, which the registry never builds.
        let _ = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

/// What the health and metrics endpoints look at.
pub struct Probe {
    pub metrics: Arc<Metrics>,
    pub pool: Pool,
    pub redis: Mutex<RedisConn>,
    pub stream_key: String,
    pub group: String,
}

/// The group as `XINFO GROUPS` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupState {
    pub pending: u64,
    /// `None` when Redis cannot tell (entries deleted from the middle of the stream).
    pub lag: Option<u64>,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Probe {
    pub async fn database_ok(&self) -> bool {
        let check = async {
            let mut conn = self.pool.get().await.ok()?;
            order_store::orders::ping(&mut conn).await.ok()
        };
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, check).await,
            Ok(Some(()))
        )
    }

    /// `Err` when Redis does not answer; `Ok(None)` when the group does not exist.
    pub async fn group_state(&self) -> Result<Option<GroupState>, ()> {
        let mut redis = self.redis.lock().await;
        let reply: Result<redis::streams::StreamInfoGroupsReply, _> = redis
            .query(&redis::Cmd::xinfo_groups(&self.stream_key))
            .await;
        match reply {
            Ok(reply) => {
                let Some(g) = reply.groups.into_iter().find(|g| g.name == self.group) else {
                    return Ok(None);
                };
                // Redis derives `lag` from the group's entries-read counter, which is off after
                // the group is reloaded from the AOF (a restart) or moved with XGROUP SETID: it
                // then reports a lag that never drains. A group whose last-delivered id is the
                // stream's last id has read everything, whatever the counter says.
                let mut lag = g.lag.map(|l| l as u64);
                if lag.is_some_and(|l| l > 0) {
                    let last: Result<redis::streams::StreamInfoStreamReply, _> = redis
                        .query(&redis::Cmd::xinfo_stream(&self.stream_key))
                        .await;
                    if last.is_ok_and(|s| s.last_generated_id == g.last_delivered_id) {
                        lag = Some(0);
                    }
                }
                Ok(Some(GroupState {
                    pending: g.pending as u64,
                    lag,
                }))
            }
            // ERR no such key: the stream (and so the group) does not exist.
            Err(crate::stream::RedisFailure::Redis(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                Ok(None)
            }
            Err(_) => Err(()),
        }
    }

    async fn readiness(&self) -> (StatusCode, String) {
        let (database, group) = tokio::join!(self.database_ok(), self.group_state());
        let redis = group.is_ok();
        let group = matches!(group, Ok(Some(_)));
        let degraded = self.metrics.is_degraded();
        let ready = database && redis && group;
        let body = format!(
            "{{\"status\":\"{}\",\"database\":{database},\"redis\":{redis},\"group\":{group},\"retrying\":{degraded}}}",
            if ready { "UP" } else { "DOWN" }
        );
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, body)
    }

    async fn metrics_text(&self) -> String {
        let (group, backlog) = tokio::join!(
            self.group_state(),
            crate::outbox::read_backlog(&self.pool, PROBE_TIMEOUT)
        );
        self.metrics.render(group, backlog, &self.pool)
    }
}

/// [`Probe`] as the shared health endpoints read it.
#[derive(Clone)]
struct Endpoints(Arc<Probe>);

impl health::Probe for Endpoints {
    /// The status and body of `/health/ready`.
    type Check = (StatusCode, String);

    const NAME: &'static str = "order-ingest";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METRICS_CONTENT_TYPE: &'static str = "text/plain; version=0.0.4";

    async fn check(&self) -> (StatusCode, String) {
        self.0.readiness().await
    }

    fn is_ready((status, _): &(StatusCode, String)) -> bool {
        *status == StatusCode::OK
    }

    fn ready_reply((status, body): (StatusCode, String)) -> Response {
        health::json(status, body)
    }

    async fn render_metrics(&self) -> String {
        self.0.metrics_text().await
    }
}

/// Binds the health and metrics server on `addr`; the returned future serves the shared
/// health, readiness and metrics endpoints ([`order_store::runtime::health`]) until `shutdown`
/// completes. Binding is done here, before anything runs, so that a taken port is a start-up
/// error and not a log line.
pub fn bind(
    addr: SocketAddr,
    probe: Arc<Probe>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()> + Send), warp::Error> {
    warp::serve(health::routes(&Endpoints(probe))).try_bind_with_graceful_shutdown(addr, shutdown)
}

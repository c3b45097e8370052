//! Counters, the batch-latency histogram, and the health/metrics HTTP server.
//!
//! The Prometheus text format is written by hand: a handful of atomics cover what ingest
//! reports, and a metrics crate would be the largest dependency of the binary.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use order_store::Pool;
use tokio::sync::Mutex;
use warp::http::StatusCode;
use warp::Filter;

use crate::event::ErrorClass;
use crate::stream::RedisConn;

/// Upper bounds (seconds) of the batch-latency buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Everything the consumer counts. Shared by the loop and the HTTP server.
#[derive(Debug, Default)]
pub struct Metrics {
    pub read: AtomicU64,
    pub inserted: AtomicU64,
    /// Order events whose order was already stored (`order_ingest_events_duplicate_total`).
    pub duplicates: AtomicU64,
    pub skipped: AtomicU64,
    pub dead_lettered: [AtomicU64; ErrorClass::ALL.len()],
    pub retried: AtomicU64,
    pub claimed: AtomicU64,
    /// Set while the loop is backing off from a transient failure.
    pub degraded: AtomicBool,
    buckets: [AtomicU64; BUCKETS.len()],
    batch_count: AtomicU64,
    batch_sum_micros: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn add_read(&self, n: usize) {
        add(&self.read, n as u64);
    }
    pub fn add_inserted(&self, n: u64) {
        add(&self.inserted, n);
    }
    pub fn add_already_present(&self, n: u64) {
        add(&self.duplicates, n);
    }
    pub fn add_skipped(&self, n: u64) {
        add(&self.skipped, n);
    }
    pub fn add_claimed(&self, n: usize) {
        add(&self.claimed, n as u64);
    }
    pub fn add_dead_letter(&self, class: ErrorClass) {
        add(&self.dead_lettered[class.index()], 1);
    }
    pub fn add_retry(&self) {
        add(&self.retried, 1);
    }
    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.store(degraded, Ordering::Relaxed);
    }
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn observe_batch(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            add(&self.buckets[i], 1);
        }
        add(&self.batch_count, 1);
        self.batch_sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The process's own metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        };
        counter(
            out,
            "order_ingest_events_read_total",
            "Stream entries read (new, pending and claimed).",
            &self.read,
        );
        counter(
            out,
            "order_ingest_events_inserted_total",
            "Orders inserted.",
            &self.inserted,
        );
        counter(
            out,
            "order_ingest_events_duplicate_total",
            "Order events whose order was already stored.",
            &self.duplicates,
        );
        counter(
            out,
            "order_ingest_events_skipped_total",
            "Entries acknowledged without an order (no payload, other event type).",
            &self.skipped,
        );
        counter(
            out,
            "order_ingest_retries_total",
            "Transient failures retried after a backoff.",
            &self.retried,
        );
        counter(
            out,
            "order_ingest_events_claimed_total",
            "Entries claimed from idle consumers.",
            &self.claimed,
        );
        let name = "order_ingest_events_dead_lettered_total";
        let _ = writeln!(
            out,
            "# HELP {name} Entries written to the dead-letter stream, by errorClass.\n# TYPE {name} counter"
        );
        for class in ErrorClass::ALL {
            let _ = writeln!(
                out,
                "{name}{{error_class=\"{}\"}} {}",
                class.as_str(),
                self.dead_lettered[class.index()].load(Ordering::Relaxed)
            );
        }
        let name = "order_ingest_degraded";
        let _ = writeln!(
            out,
            "# HELP {name} 1 while the consumer is backing off from a transient failure.\n# TYPE {name} gauge\n{name} {}",
            u8::from(self.is_degraded())
        );
        let name = "order_ingest_batch_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a batch read to its acknowledgement.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = self.batch_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.batch_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {total}");
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
        let mut out = String::with_capacity(4096);
        self.metrics.render(&mut out);
        let state = self.group_state().await;
        let _ = writeln!(
            out,
            "# HELP order_ingest_redis_up 1 when Redis answered this scrape.\n# TYPE order_ingest_redis_up gauge\norder_ingest_redis_up {}",
            u8::from(state.is_ok())
        );
        if let Ok(Some(group)) = state {
            let _ = writeln!(
                out,
                "# HELP order_ingest_group_pending Entries delivered to the group and not yet acknowledged.\n# TYPE order_ingest_group_pending gauge\norder_ingest_group_pending {}",
                group.pending
            );
            if let Some(lag) = group.lag {
                let _ = writeln!(
                    out,
                    "# HELP order_ingest_group_lag Entries in the stream not yet delivered to the group.\n# TYPE order_ingest_group_lag gauge\norder_ingest_group_lag {lag}"
                );
            }
        }
        out
    }
}

/// Binds the health and metrics server on `addr`; the returned future serves
/// `/health/live`, `/health/ready` and `/metrics`, and the same checks and numbers under Spring
/// Boot Actuator's paths (`/actuator/health`, `/actuator/health/liveness`,
/// `/actuator/health/readiness`, `/actuator/info`, `/actuator/prometheus`;
/// docs/compatibility.md §7), until `shutdown` completes. Binding is done here, before anything
/// runs, so that a taken port is a start-up error and not a log line.
pub fn bind(
    addr: SocketAddr,
    probe: Arc<Probe>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()> + Send), warp::Error> {
    let json = |body: String| warp::reply::with_header(body, "content-type", "application/json");
    let live = warp::path!("health" / "live")
        .or(warp::path!("actuator" / "health" / "liveness"))
        .unify()
        .and(warp::get())
        .map(move || json("{\"status\":\"UP\"}".to_owned()));
    let ready_probe = probe.clone();
    let ready = warp::path!("health" / "ready")
        .and(warp::get())
        .and_then(move || {
            let probe = ready_probe.clone();
            async move {
                let (status, body) = probe.readiness().await;
                Ok::<_, Infallible>(warp::reply::with_status(json(body), status))
            }
        });
    let actuator_probe = probe.clone();
    let actuator_health = warp::path!("actuator" / "health")
        .or(warp::path!("actuator" / "health" / "readiness"))
        .unify()
        .and(warp::get())
        .and_then(move || {
            let probe = actuator_probe.clone();
            async move {
                let (status, _) = probe.readiness().await;
                let word = if status == StatusCode::OK {
                    "UP"
                } else {
                    "DOWN"
                };
                let body = format!("{{\"status\":\"{word}\"}}");
                Ok::<_, Infallible>(warp::reply::with_status(json(body), status))
            }
        });
    let info = warp::path!("actuator" / "info")
        .and(warp::get())
        .map(move || {
            json(format!(
                "{{\"app\":{{\"name\":\"order-ingest\",\"version\":\"{}\"}}}}",
                env!("CARGO_PKG_VERSION")
            ))
        });
    let metrics = warp::path!("metrics")
        .or(warp::path!("actuator" / "prometheus"))
        .unify()
        .and(warp::get())
        .and_then(move || {
            let probe = probe.clone();
            async move {
                Ok::<_, Infallible>(warp::reply::with_header(
                    probe.metrics_text().await,
                    "content-type",
                    "text/plain; version=0.0.4",
                ))
            }
        });
    let routes = live.or(ready).or(actuator_health).or(info).or(metrics);
    warp::serve(routes).try_bind_with_graceful_shutdown(addr, shutdown)
}

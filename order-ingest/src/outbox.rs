//! The outbox relay: publishes the `OrderUpdated` events that order-api wrote to
//! `order_outbox` onto the updates stream (`orders:updated`), in commit order per order.
//!
//! It runs in every consume process; one batch is one PostgreSQL transaction:
//! 1. `pg_try_advisory_xact_lock`: only the relay holding it publishes, so there is one
//!    publisher at a time across all pods. The lock is transaction-scoped (it works through a
//!    pooler in transaction mode) and ends with the commit, a rollback, or the death of the
//!    holder's connection, so another pod takes over at its next poll.
//! 2. The oldest rows in id order. Two changes of one order are serialised by the order's row
//!    lock, so their ids are in commit order, and a visible row's predecessors on the same
//!    order are visible too.
//! 3. One pipeline of `XADD … MAXLEN ~ n`, all to the one stream key (one hash slot).
//! 4. `DELETE … WHERE id = ANY(published ids)`: exactly those, never "up to the highest", since
//!    a row with a lower id can commit after higher ones were read.
//! 5. Commit.
//!
//! A failed publish deletes nothing: the rows stay, in front of every later row, and the whole
//! batch is tried again after a backoff (skipping a row would reorder its order's
//! events). A crash between the `XADD`s and the commit republishes the batch: consumers see the
//! same `id` and `sequence` again and dedupe. Polling is used rather than LISTEN/NOTIFY, which
//! does not survive a pooler in transaction mode: every 200 ms when idle, at once after a full
//! batch.

use std::sync::Arc;
use std::time::Duration;

use order_store::outbox::{self, Backlog, OutboxEvent};
use order_store::{AsyncConnection as _, Pool, StoreError};
use prometheus::{GaugeVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::sync::watch;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::config::OutboxArgs;
use crate::config::Timeouts;
use crate::metrics::Metrics;
use crate::retry::{self, Backoff};
use crate::stream::{RedisConn, RedisFailure};

/// Longest wait between two polls of an idle outbox.
pub const IDLE_POLL: Duration = Duration::from_millis(200);
/// Rows per batch (one transaction, one pipeline).
pub const BATCH_SIZE: i64 = 500;

/// The relay's series on order-ingest's `/metrics`.
#[derive(Debug)]
pub struct RelayMetrics {
    pub published: IntCounter,
    pub publish_errors: IntCounter,
    active: IntGauge,
    /// No labels; no child (so no series) while the database cannot tell.
    backlog: IntGaugeVec,
    oldest_age: GaugeVec,
}

impl RelayMetrics {
    pub fn register(r: &Registry) -> Self {
        use order_store::runtime::metrics::register;
        Self {
            published: register(
                r,
                IntCounter::new(
                    "order_outbox_published_total",
                    "OrderUpdated events this process published to the updates stream.",
                ),
            ),
            publish_errors: register(
                r,
                IntCounter::new(
                    "order_outbox_publish_errors_total",
                    "Relay batches that failed (database or Redis); their rows stay and are retried.",
                ),
            ),
            active: register(
                r,
                IntGauge::new(
                    "order_outbox_relay_active",
                    "1 while this process is the relay publishing the outbox.",
                ),
            ),
            backlog: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "order_outbox_backlog",
                        "Outbox rows not yet published.",
                    ),
                    &[],
                ),
            ),
            oldest_age: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "order_outbox_oldest_age_seconds",
                        "Age of the oldest outbox row not yet published (0 when empty).",
                    ),
                    &[],
                ),
            ),
        }
    }

    /// The backlog as a scrape found it; `None` (the database did not answer) removes both series.
    pub fn set_backlog(&self, backlog: Option<Backlog>) {
        self.backlog.reset();
        self.oldest_age.reset();
        if let Some(backlog) = backlog {
            self.backlog
                .with_label_values::<&str>(&[])
                .set(backlog.rows);
            self.oldest_age
                .with_label_values::<&str>(&[])
                .set(backlog.oldest_age_seconds);
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.get() != 0
    }
}

/// The backlog now, within `timeout`; `None` when the database does not answer in time.
pub async fn read_backlog(pool: &Pool, timeout: Duration) -> Option<Backlog> {
    let read = async {
        let mut conn = pool.get().await.ok()?;
        outbox::backlog(&mut conn).await.ok()
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// Why a batch failed; either way nothing was deleted and the batch is tried again.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] RedisFailure),
    /// A pipeline answered with fewer ids than it had `XADD`s.
    #[error("redis answered {answered} of {sent} XADDs")]
    Short { answered: usize, sent: usize },
}

/// What one [`Relay::publish_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Another relay holds the lock.
    Standby,
    /// Published and deleted this many rows (0: the outbox was empty).
    Published(usize),
}

pub struct Relay {
    pool: Pool,
    redis: RedisConn,
    stream_key: String,
    maxlen: u64,
    batch_size: i64,
    timeouts: Timeouts,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

impl Relay {
    /// A relay publishing to `args.updates_stream_key` through `redis`, which counts its failed
    /// commands into the ingest's Redis error counter.
    pub fn new(
        args: &OutboxArgs,
        redis: RedisConn,
        pool: Pool,
        timeouts: Timeouts,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            pool,
            redis: redis.count_errors(metrics.redis_errors()),
            stream_key: args.updates_stream_key.clone(),
            maxlen: args.updates_stream_maxlen,
            batch_size: BATCH_SIZE,
            timeouts,
            metrics,
            stop,
        }
    }

    /// Rows per batch instead of [`BATCH_SIZE`].
    #[must_use]
    pub fn with_batch_size(mut self, rows: i64) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Publishes until shutdown is requested. A batch in flight is finished (or fails, deleting
    /// nothing) before it returns.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        tracing::info!(stream = %self.stream_key, "outbox relay started");
        while !self.stopping() {
            let pause = match self.publish_batch().await {
                Ok(Step::Published(n)) if n as i64 >= self.batch_size => {
                    backoff.reset();
                    continue;
                }
                Ok(_) => {
                    backoff.reset();
                    IDLE_POLL
                }
                Err(e) => {
                    self.metrics.outbox.publish_errors.inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
                        "outbox batch failed; nothing deleted, retrying");
                    delay
                }
            };
            let mut stop = self.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
        }
        self.metrics.outbox.active.set(0);
        tracing::info!("outbox relay stopped");
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    /// One batch: lock, read the oldest rows, publish them, delete exactly those, commit.
    pub async fn publish_batch(&mut self) -> Result<Step, RelayError> {
        let Self {
            pool,
            redis,
            stream_key,
            maxlen,
            batch_size,
            timeouts,
            metrics,
            ..
        } = self;
        let (stream_key, maxlen, batch_size) = (stream_key.as_str(), *maxlen, *batch_size);
        // Bounded like every ingest database step: the pool checkout, the statements and the
        // Redis deadline together. Past it the transaction is abandoned, which rolls it back.
        let bound = timeouts.db() + redis.deadline();
        let work = async {
            let mut conn = pool.get().await.map_err(StoreError::from)?;
            // A failed publish ends the transaction having deleted nothing (its commit then
            // only releases the lock, like a rollback); a database error rolls it back.
            let step = conn
                .transaction(async |conn| {
                    if !outbox::try_lock_relay(conn).await? {
                        metrics.outbox.active.set(0);
                        return Ok(Ok(Step::Standby));
                    }
                    metrics.outbox.active.set(1);
                    let rows = outbox::oldest(conn, batch_size).await?;
                    if rows.is_empty() {
                        return Ok(Ok(Step::Published(0)));
                    }
                    if let Err(failure) = publish(redis, stream_key, maxlen, &rows).await {
                        return Ok(Err(failure));
                    }
                    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
                    outbox::delete(conn, &ids).await?;
                    Ok::<_, StoreError>(Ok(Step::Published(rows.len())))
                })
                .await?;
            step
        };
        let step = match tokio::time::timeout(bound, work).await {
            Ok(step) => step,
            Err(_) => Err(RelayError::Store(StoreError::Unavailable(format!(
                "outbox batch did not finish within {bound:?}"
            )))),
        };
        match &step {
            Ok(Step::Published(n)) => metrics.outbox.published.inc_by(*n as u64),
            // Without the database this process cannot know whether it still holds the role.
            Err(RelayError::Store(_)) => metrics.outbox.active.set(0),
            Ok(Step::Standby) | Err(RelayError::Redis(_) | RelayError::Short { .. }) => {}
        }
        step
    }
}

/// `XADD`s of `rows`, in id order, as one pipeline on `redis`, under a span linked to the trace
/// of each change that carried one.
async fn publish(
    redis: &mut RedisConn,
    stream_key: &str,
    maxlen: u64,
    rows: &[OutboxEvent],
) -> Result<(), RelayError> {
    let span = tracing::debug_span!(
        "outbox publish",
        otel.name = %format_args!("publish {stream_key}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "redis",
        messaging.operation.type = "send",
        messaging.destination.name = stream_key,
        messaging.batch.message_count = i64::try_from(rows.len()).unwrap_or(i64::MAX),
    );
    for row in rows {
        if let Some(context) = row
            .traceparent
            .as_deref()
            .and_then(|tp| order_store::runtime::telemetry::remote_span_context(tp, None))
        {
            span.add_link(context);
        }
    }
    // MULTI/EXEC: all of the batch or none of it. A plain pipeline can be applied in part with a
    // gap in front: a Redis that finishes loading its data set mid-pipeline refuses the first
    // commands (LOADING) and applies the rest, and the retry would then publish the refused rows
    // behind later changes of the same orders. All the rows go to one key, so one slot on a
    // cluster too.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for row in rows {
        pipe.cmd("XADD")
            .arg(stream_key)
            .arg("MAXLEN")
            .arg("~")
            .arg(maxlen)
            .arg("*")
            .arg("eventId")
            .arg(row.event_id.to_string())
            .arg("eventType")
            .arg(outbox::EVENT_TYPE)
            .arg("payload")
            .arg(row.cloud_event());
    }
    let result = redis
        .pipe::<Vec<String>>(&pipe)
        .instrument(span.clone())
        .await;
    match result {
        Ok(ids) if ids.len() == rows.len() => Ok(()),
        Ok(ids) => {
            span.record("otel.status_code", "ERROR");
            Err(RelayError::Short {
                answered: ids.len(),
                sent: rows.len(),
            })
        }
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            Err(e.into())
        }
    }
}

/// Starts the relay as a task when `args.relay` is on; the handle completes after shutdown.
pub fn spawn(
    args: &OutboxArgs,
    redis_url: &str,
    pool: Pool,
    timeouts: Timeouts,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, redis::RedisError> {
    if !args.relay {
        tracing::info!("outbox relay off (--outbox-relay false)");
        return Ok(None);
    }
    let redis = RedisConn::new(crate::tls::redis_client(redis_url)?, retry::REDIS_COMMAND);
    let relay = Relay::new(args, redis, pool, timeouts, metrics, stop);
    Ok(Some(tokio::spawn(relay.run())))
}

//! `--replay`: re-read the stream with `XRANGE` and insert what is missing.
//!
//! Replay never joins the consumer group: it does not create, read or acknowledge pending
//! entries, so it can run beside live consumers. It reads pages of `--batch-size` entries and
//! inserts each page with one idempotent `insert_if_absent`, so running it twice inserts
//! nothing the second time.
//!
//! Permanent failures are reported (a warn log line per entry and the `failed` count of the
//! summary) and are NOT written to the dead-letter stream: the live consumer dead-lettered
//! them when it first saw them, and a replay must be repeatable without duplicating dead
//! letters. Any failure makes the process exit 1. Transient failures are retried with backoff
//! for a while (an operator is waiting); if they persist, replay stops with the id to resume
//! from.

use std::time::Duration;

use order_store::orders::{insert_if_absent, InsertOutcome};
use order_store::{NewOrder, Pool, StoreError};
use redis::streams::StreamRangeReply;

use crate::config::{StreamArgs, StreamBound};
use crate::event::{decode, Decoded, ErrorClass};
use crate::retry::Backoff;
use crate::stream::{Entry, RedisConn};

/// Attempts per step before replay gives up on a dependency.
const ATTEMPTS: u32 = 12;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub read: u64,
    pub inserted: u64,
    pub already_present: u64,
    pub skipped: u64,
    pub failed: u64,
    /// The last stream id replayed (all entries up to it are done).
    pub last_id: Option<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replay summary: read={} inserted={} already_present={} skipped={} failed={} last_id={}",
            self.read,
            self.inserted,
            self.already_present,
            self.skipped,
            self.failed,
            self.last_id.as_deref().unwrap_or("-")
        )
    }
}

/// Replay stopped because a dependency stayed unavailable.
#[derive(Debug, thiserror::Error)]
#[error("replay stopped: {cause}; {summary}; resume with --from {resume}")]
pub struct ReplayError {
    pub cause: String,
    pub resume: String,
    pub summary: Summary,
}

/// Replays `[from, to]` of `args.stream_key` into the database behind `pool`.
pub async fn replay(
    pool: &Pool,
    args: &StreamArgs,
    from: &StreamBound,
    to: Option<&StreamBound>,
) -> Result<Summary, ReplayError> {
    let client = redis::Client::open(args.redis_url.as_str()).map_err(|e| ReplayError {
        cause: e.to_string(),
        resume: from.0.clone(),
        summary: Summary::default(),
    })?;
    let mut redis = RedisConn::new(client, Duration::from_secs(10));
    let mut summary = Summary::default();
    let end = to.map_or("+", |b| b.0.as_str()).to_owned();
    let mut start = from.0.clone();
    loop {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&args.stream_key)
            .arg(&start)
            .arg(&end)
            .arg("COUNT")
            .arg(args.batch_size);
        let page: StreamRangeReply = {
            let mut backoff = Backoff::standard();
            loop {
                match redis.query(&cmd).await {
                    Ok(page) => break page,
                    Err(e) => give_up_or_wait(&mut backoff, "read", &e, &start, &summary).await?,
                }
            }
        };
        if page.ids.is_empty() {
            return Ok(summary);
        }
        let entries: Vec<Entry> = page
            .ids
            .iter()
            .map(|id| Entry::from_stream_id(id, 1))
            .collect();
        let mut orders: Vec<NewOrder> = Vec::new();
        let mut order_entries = Vec::new();
        for entry in &entries {
            match decode(entry.payload.as_deref(), &args.event_type) {
                Ok(Decoded::Skip(_)) => summary.skipped += 1,
                Ok(Decoded::Order(event)) => {
                    order_entries.push(entry);
                    orders.push(event.order);
                }
                Err(e) => report_failure(&mut summary, entry, e.class, &e.message),
            }
        }
        if !orders.is_empty() {
            let mut backoff = Backoff::standard();
            let outcomes = loop {
                match insert(pool, &orders).await {
                    Ok(outcomes) => break outcomes,
                    Err(e) if e.is_transient() => {
                        give_up_or_wait(&mut backoff, "insert", &e, &start, &summary).await?;
                    }
                    Err(e) => {
                        return Err(ReplayError {
                            cause: e.to_string(),
                            resume: start,
                            summary,
                        })
                    }
                }
            };
            for ((order, entry), outcome) in orders.iter().zip(order_entries).zip(outcomes) {
                match outcome {
                    InsertOutcome::Inserted => {
                        summary.inserted += 1;
                        tracing::info!(orderId = %order.id, orderNumber = %order.order_number, streamId = %entry.id, "replay inserted order");
                    }
                    InsertOutcome::AlreadyPresent => summary.already_present += 1,
                    InsertOutcome::Rejected(r) => {
                        report_failure(&mut summary, entry, r.kind.into(), &r.message);
                    }
                }
            }
        }
        summary.read += entries.len() as u64;
        let last = entries.last().map(|e| e.id.clone()).unwrap_or_default();
        start = format!("({last}");
        summary.last_id = Some(last);
        tracing::info!(
            read = summary.read,
            inserted = summary.inserted,
            "replay progress"
        );
    }
}

async fn insert(pool: &Pool, orders: &[NewOrder]) -> Result<Vec<InsertOutcome>, StoreError> {
    let work = async {
        let mut conn = pool.get().await?;
        insert_if_absent(&mut conn, orders).await
    };
    tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("insert timed out".into())))
}

fn report_failure(summary: &mut Summary, entry: &Entry, class: ErrorClass, message: &str) {
    summary.failed += 1;
    tracing::warn!(
        streamId = %entry.id,
        eventId = entry.event_id.as_deref().unwrap_or_default(),
        errorClass = class.as_str(),
        error = message,
        "replay: entry cannot be stored (not dead-lettered)"
    );
}

async fn give_up_or_wait(
    backoff: &mut Backoff,
    step: &str,
    error: &dyn std::fmt::Display,
    start: &str,
    summary: &Summary,
) -> Result<(), ReplayError> {
    if backoff.attempts() + 1 >= ATTEMPTS {
        let resume = start.strip_prefix('(').unwrap_or(start);
        return Err(ReplayError {
            cause: format!("{step}: {error}"),
            resume: if resume == "-" {
                "0".into()
            } else {
                resume.to_owned()
            },
            summary: summary.clone(),
        });
    }
    let delay = backoff.next_delay();
    tracing::warn!(step, error = %error, retry_in_ms = delay.as_millis() as u64, "replay: transient failure; retrying");
    tokio::time::sleep(delay).await;
    Ok(())
}

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

use order_store::Pool;
use redis::streams::StreamRangeReply;
use tracing::Instrument as _;

use crate::batch::{self, Batch};
use crate::config::{StreamArgs, StreamBound};
use crate::retry::{self, REDIS_COMMAND};
use crate::stream::{Entry, RedisConn};

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
    let mut summary = Summary::default();
    let mut start = from.0.clone();
    let stopped = |cause: String, start: &str, summary: &Summary| {
        let resume = start.strip_prefix('(').unwrap_or(start);
        ReplayError {
            cause,
            resume: if resume == "-" {
                "0".into()
            } else {
                resume.to_owned()
            },
            summary: summary.clone(),
        }
    };
    let client = args
        .redis_client()
        .map_err(|e| stopped(e.to_string(), &start, &summary))?;
    let mut redis = RedisConn::new(client, REDIS_COMMAND);
    let end = to.map_or("+", |b| b.0.as_str()).to_owned();
    loop {
        let cmd = redis::Cmd::xrange_count(&args.stream_key, &start, &end, args.batch_size);
        let page: StreamRangeReply =
            retry::bounded("replay", "read", |_| true, async || redis.query(&cmd).await)
                .await
                .map_err(|e| stopped(format!("read: {e}"), &start, &summary))?;
        if page.ids.is_empty() {
            return Ok(summary);
        }
        let entries: Vec<Entry> = page
            .ids
            .iter()
            .map(|id| Entry::from_stream_id(id, 1))
            .collect();
        // The same batch span as the live consumer's, without a group.
        let span = batch::span(&args.stream_key, None, entries.len());
        // Replayed entries count as first deliveries: the delivery limit never applies.
        let batch = Batch::decode(&entries, &args.event_type, args.max_deliveries);
        batch.link_events(&span);
        let timeout = args.timeouts.db();
        let outcomes = retry::bounded(
            "replay",
            "insert",
            order_store::StoreError::is_transient,
            async || batch::insert(pool, &batch.orders, timeout).await,
        )
        .instrument(span.clone())
        .await
        .map_err(|e| stopped(format!("insert: {e}"), &start, &summary))?;
        let done = batch.finish(&entries, outcomes);
        span.in_scope(|| {
            for letter in &done.failed {
                letter.log("replay: entry cannot be stored (not dead-lettered)");
            }
        });
        summary.inserted += done.tally.inserted;
        summary.already_present += done.tally.already_present;
        summary.skipped += done.skipped;
        summary.failed += done.failed.len() as u64;
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

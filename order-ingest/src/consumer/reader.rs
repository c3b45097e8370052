//! The read stage: this consumer's own pending list, claims of entries idle on other consumers,
//! and new entries, decoded into batches in the loop's own task.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::stage::{note_failure, Stop};
use super::Abandoned;
use crate::batch::{self, Batch};
use crate::config::StreamArgs;
use crate::group::Group;
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::stream::{Entry, RedisFailure};

/// Entries read from the stream, and where from (for logs).
pub(super) struct Read {
    pub(super) entries: Vec<Entry>,
    pub(super) source: &'static str,
}

/// A batch read and decoded, waiting for (or in) its insert.
pub(super) struct Decoded {
    pub(super) entries: Vec<Entry>,
    pub(super) ids: Vec<String>,
    pub(super) source: &'static str,
    pub(super) batch: Batch,
    /// The batch's span, from its decode to its acknowledgement.
    pub(super) span: tracing::Span,
    pub(super) started: Instant,
}

/// The read side: the group's reader connection and its command connection for the pending
/// list and claims; decodes what it reads.
pub(super) struct Reader {
    pub(super) args: StreamArgs,
    pub(super) group: Group,
    pub(super) metrics: Arc<Metrics>,
    pub(super) stop: Stop,
    /// False until this consumer's own pending entries (id `0`) have all been read.
    pub(super) pending_done: bool,
    claim_cursor: String,
    next_claim: Instant,
    /// The ids read ahead of the batch in flight; shared with the sink (see `Sink::ahead`).
    ahead: Arc<Mutex<Vec<String>>>,
}

impl Reader {
    pub(super) fn new(
        group: Group,
        args: StreamArgs,
        metrics: Arc<Metrics>,
        stop: Stop,
        ahead: Arc<Mutex<Vec<String>>>,
    ) -> Self {
        Self {
            args,
            group,
            metrics,
            stop,
            pending_done: false,
            claim_cursor: "0-0".to_owned(),
            next_claim: Instant::now(),
            ahead,
        }
    }

    /// Creates the group at `start` unless it exists (an existing group is never moved).
    pub(super) async fn ensure_group(&mut self, start: &str) -> Result<(), Abandoned> {
        let mut backoff = Backoff::standard();
        loop {
            match self.group.create(start).await {
                Ok(created) => {
                    if created {
                        tracing::info!(group = %self.args.consumer_group, start, "created consumer group");
                    }
                    return Ok(());
                }
                Err(e) => {
                    if self.stop.stopping() {
                        return Err(Abandoned::default());
                    }
                    self.pause(&mut backoff, "create group", &e.to_string())
                        .await?;
                }
            }
        }
    }

    /// Logs a transient failure and waits before the next attempt. Returns `Err` once shutdown
    /// was requested and the drain time is spent.
    pub(super) async fn pause(
        &mut self,
        backoff: &mut Backoff,
        step: &str,
        error: &str,
    ) -> Result<(), Abandoned> {
        let delay = note_failure(&self.metrics, backoff, step, error, 0);
        self.stop.wait(delay).await
    }

    /// Whether the next read is `XREADGROUP >` only, which never returns an entry that was
    /// delivered before (so never one of the batch in flight).
    pub(super) fn reads_new_only(&self) -> bool {
        self.pending_done && Instant::now() < self.next_claim
    }

    /// The next read, or `None` when a shutdown request woke it and it did not answer in time.
    pub(super) async fn read_or_stop(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Result<Read, RedisFailure>> {
        let waker = self.group.waker();
        let read_deadline = self.group.read_deadline();
        let read = {
            let read = self.next_read();
            tokio::pin!(read);
            tokio::select! {
            read = &mut read => Some(read),
            _ = shutdown.changed() => {
                // Wake the parked read rather than drop it: entries the server hands it
                // before it wakes are then processed and acknowledged here, instead of
                // staying pending on a consumer that is about to exit.
                waker.wake().await;
                tokio::time::timeout(read_deadline, &mut read).await.ok()
            }
            }
        };
        if let Some(Ok(read)) = &read {
            let ids: Vec<String> = read.entries.iter().map(|e| e.id.clone()).collect();
            self.held_ahead(&ids);
        }
        read
    }

    /// Records the ids read ahead of the batch in flight, which the sink keeps from being
    /// claimed while it retries.
    pub(super) fn held_ahead(&self, ids: &[String]) {
        let mut ahead = self
            .ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ahead.clear();
        ahead.extend_from_slice(ids);
    }

    fn claim_interval(&self) -> Duration {
        Duration::from_millis(self.args.claim_idle_ms / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Own pending entries first, then idle entries of other consumers, then new entries.
    async fn next_read(&mut self) -> Result<Read, RedisFailure> {
        if !self.pending_done {
            let entries = self.group.read_own_pending().await?;
            if !entries.is_empty() {
                return Ok(Read {
                    entries,
                    source: "pending",
                });
            }
            self.pending_done = true;
        }
        if Instant::now() >= self.next_claim {
            let entries = self.claim().await?;
            if !entries.is_empty() {
                return Ok(Read {
                    entries,
                    source: "claimed",
                });
            }
        }
        Ok(Read {
            entries: self.group.read_new().await?,
            source: "new",
        })
    }

    /// One `XAUTOCLAIM` step over the group's pending list, resuming where the last one ended.
    async fn claim(&mut self) -> Result<Vec<Entry>, RedisFailure> {
        // Claimed entries are ours at once: if anything fails before they are returned, they
        // are read again as own pending.
        self.pending_done = false;
        let claimed = self
            .group
            .claim(self.args.claim_idle_ms, &self.claim_cursor)
            .await?;
        self.pending_done = true;
        if claimed.next_cursor == "0-0" {
            "0-0".clone_into(&mut self.claim_cursor);
            self.next_claim = Instant::now() + self.claim_interval();
        } else {
            self.claim_cursor = claimed.next_cursor;
        }
        if claimed.deleted > 0 {
            tracing::info!(
                count = claimed.deleted,
                "dropped pending entries that were deleted from the stream"
            );
        }
        if !claimed.entries.is_empty() {
            self.metrics.add_claimed(claimed.entries.len());
            tracing::info!(
                count = claimed.entries.len(),
                "claimed idle entries of another consumer"
            );
        }
        Ok(claimed.entries)
    }

    /// Opens the batch's span and decodes the entries in it.
    pub(super) fn decode(&self, read: Read) -> Decoded {
        let span = batch::span(
            &self.args.stream_key,
            Some(&self.args.consumer_group),
            read.entries.len(),
        );
        let started = Instant::now();
        let Read { entries, source } = read;
        self.metrics.add_read(entries.len());
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let batch = span
            .in_scope(|| Batch::decode(&entries, &self.args.event_type, self.args.max_deliveries));
        batch.link_events(&span);
        Decoded {
            entries,
            ids,
            source,
            batch,
            span,
            started,
        }
    }
}

//! The consumer loop: read a batch, decode, insert it with one statement, dead-letter what can
//! never be stored, acknowledge, repeat.
//!
//! It follows the shape of vector's queue sources: one task, `tokio::select!` between the
//! shutdown signal and one read, and the batch that was read is always finished (inserted,
//! dead-lettered, acknowledged) before the next read starts. There is no timer that starts
//! reads, so reads never overlap (docs/compatibility.md §6.3) and memory is bounded by one batch.
//!
//! Failure handling:
//! - Permanent (the entry itself is wrong): dead letter, then acknowledge.
//! - Transient (database or Redis unreachable, timeouts, pool exhausted): nothing is
//!   acknowledged or dead-lettered; the step is retried with capped exponential backoff and
//!   jitter until it succeeds (docs/compatibility.md §6.2). While it holds a batch, the consumer
//!   refreshes the idle time of its entries (`XCLAIM ... JUSTID`, which does not count as a
//!   delivery), so a long outage does not let other pods claim them and push them over
//!   `--max-deliveries`.
//! - Dead consumers: entries idle on another consumer for `--claim-idle-ms` are claimed with
//!   `XAUTOCLAIM` (docs/compatibility.md §6.1); an entry delivered more than `--max-deliveries` times
//!   is dead-lettered with its delivery count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use order_store::{NewOrder, Pool};
use tokio::sync::watch;

use crate::batch::{self, Batch, Outcome};
use crate::config::StreamArgs;
use crate::dlq::DeadLetter;
use crate::group::Group;
use crate::metrics::Metrics;
use crate::retry::{Backoff, DRAIN_LIMIT};
use crate::stream::{Entry, RedisFailure};
use tracing::Instrument as _;

/// How [`Consumer::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown requested and everything read was acknowledged.
    Clean,
    /// Shutdown requested while a dependency was down: the batch in flight was left pending
    /// (nothing lost: another consumer claims it, or this one reads it again on restart).
    Abandoned { entries: usize },
}

/// The drain deadline passed during shutdown.
struct Abandon;

/// Entries read from the stream, and where from (for logs).
struct Read {
    entries: Vec<Entry>,
    source: &'static str,
}

pub struct Consumer {
    args: StreamArgs,
    group: Group,
    dlq_key: String,
    pool: Pool,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    stop_seen: Option<Instant>,
    /// False until this consumer's own pending entries (id `0`) have all been read.
    pending_done: bool,
    claim_cursor: String,
    next_claim: Instant,
}

impl Consumer {
    /// `shutdown` turning `true` (or its sender being dropped) asks the loop to stop.
    pub fn new(
        args: StreamArgs,
        pool: Pool,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            group: Group::new(&args, args.resolved_consumer_name())?
                .count_errors(metrics.redis_errors()),
            dlq_key: args.dlq_key(),
            args,
            pool,
            metrics,
            shutdown,
            stop_seen: None,
            pending_done: false,
            claim_cursor: "0-0".to_owned(),
            next_claim: Instant::now(),
        })
    }

    pub fn consumer_name(&self) -> &str {
        self.group.consumer()
    }

    fn stopping(&mut self) -> bool {
        let stop = *self.shutdown.borrow() || self.shutdown.has_changed().is_err();
        if stop && self.stop_seen.is_none() {
            self.stop_seen = Some(Instant::now());
        }
        stop
    }

    fn drain_expired(&mut self) -> bool {
        self.stopping() && self.stop_seen.is_some_and(|t| t.elapsed() >= DRAIN_LIMIT)
    }

    /// Completes when the drain time after a shutdown request is spent.
    fn drain_timer(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut shutdown = self.shutdown.clone();
        let seen = self.stop_seen;
        async move {
            let start = if let Some(t) = seen {
                t
            } else {
                let _ = shutdown.wait_for(|stop| *stop).await;
                Instant::now()
            };
            tokio::time::sleep_until((start + DRAIN_LIMIT).into()).await;
        }
    }

    fn claim_interval(&self) -> Duration {
        Duration::from_millis(self.args.claim_idle_ms / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Runs until shutdown is requested.
    pub async fn run(mut self) -> Exit {
        tracing::info!(
            stream = %self.args.stream_key,
            group = %self.args.consumer_group,
            consumer = %self.group.consumer(),
            "consumer starting"
        );
        let start = self.args.group_start.clone();
        if self.ensure_group(&start).await.is_err() {
            return Exit::Clean;
        }
        let mut backoff = Backoff::standard();
        let mut shutdown = self.shutdown.clone();
        loop {
            if self.stopping() {
                break;
            }
            let read = {
                let waker = self.group.waker();
                let read_deadline = self.group.read_deadline();
                let read = self.next_read();
                tokio::pin!(read);
                tokio::select! {
                    read = &mut read => read,
                    _ = shutdown.changed() => {
                        // Wake the parked read rather than drop it: entries the server hands it
                        // before it wakes are then processed and acknowledged here, instead of
                        // staying pending on a consumer that is about to exit.
                        waker.wake().await;
                        match tokio::time::timeout(read_deadline, &mut read).await {
                            Ok(read) => read,
                            Err(_) => continue,
                        }
                    }
                }
            };
            match read {
                Ok(read) => {
                    backoff.reset();
                    self.metrics.set_degraded(false);
                    if read.entries.is_empty() {
                        continue;
                    }
                    let count = read.entries.len();
                    if self.handle(read).await.is_err() {
                        return Exit::Abandoned { entries: count };
                    }
                }
                Err(e) => {
                    if e.is_no_group() {
                        tracing::warn!(stream = %self.args.stream_key, "consumer group is gone; recreating it");
                        // Whatever the stream holds now arrived after the group was lost: read it all.
                        if self.ensure_group("0").await.is_err()
                            || self
                                .pause(&mut backoff, "read", &e.to_string(), &[])
                                .await
                                .is_err()
                        {
                            break;
                        }
                        continue;
                    }
                    // Entries may have been delivered to a read whose answer was lost:
                    // read this consumer's pending list before new entries.
                    self.pending_done = false;
                    if self
                        .pause(&mut backoff, "read", &e.to_string(), &[])
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        self.drain_own_pending().await
    }

    /// On shutdown: a read cancelled mid-flight may have had entries delivered to it, so this
    /// consumer's pending list is read once more and finished, leaving nothing pending on it.
    async fn drain_own_pending(&mut self) -> Exit {
        let mut backoff = Backoff::standard();
        loop {
            match self.group.read_own_pending().await {
                Ok(entries) if entries.is_empty() => break,
                Ok(entries) => {
                    let count = entries.len();
                    let read = Read {
                        entries,
                        source: "pending",
                    };
                    if self.handle(read).await.is_err() {
                        return Exit::Abandoned { entries: count };
                    }
                }
                // No group, so nothing pending either.
                Err(e) if e.is_no_group() => break,
                Err(e) => {
                    if self
                        .pause(&mut backoff, "read pending", &e.to_string(), &[])
                        .await
                        .is_err()
                    {
                        return Exit::Abandoned { entries: 0 };
                    }
                }
            }
        }
        self.metrics.set_degraded(false);
        tracing::info!(consumer = %self.group.consumer(), "consumer stopped; nothing left pending");
        Exit::Clean
    }

    /// Creates the group at `start` unless it exists (an existing group is never moved).
    async fn ensure_group(&mut self, start: &str) -> Result<(), Abandon> {
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
                    if self.stopping() {
                        return Err(Abandon);
                    }
                    self.pause(&mut backoff, "create group", &e.to_string(), &[])
                        .await?;
                }
            }
        }
    }

    /// Logs a transient failure and waits before the next attempt. Returns `Err` once shutdown
    /// was requested and the drain time is spent.
    async fn pause(
        &mut self,
        backoff: &mut Backoff,
        step: &str,
        error: &str,
        held: &[String],
    ) -> Result<(), Abandon> {
        self.metrics.add_retry();
        self.metrics.set_degraded(true);
        let delay = backoff.next_delay();
        tracing::warn!(
            step,
            error = %error,
            attempt = backoff.attempts(),
            retry_in_ms = delay.as_millis() as u64,
            held = held.len(),
            "transient failure; retrying"
        );
        if !held.is_empty() {
            self.group.refresh_idle(held).await;
        }
        if self.drain_expired() {
            return Err(Abandon);
        }
        if let Some(t) = self.stop_seen {
            tokio::time::sleep(delay.min(DRAIN_LIMIT.saturating_sub(t.elapsed()))).await;
        } else {
            // Woken early by a shutdown request, so that the drain time starts counting.
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => { self.stopping(); }
            }
        }
        if self.drain_expired() {
            return Err(Abandon);
        }
        Ok(())
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

    /// Finishes one read in the batch's span: decode, one insert, dead letters, one
    /// acknowledgement.
    async fn handle(&mut self, read: Read) -> Result<(), Abandon> {
        let span = batch::span(
            &self.args.stream_key,
            Some(&self.args.consumer_group),
            read.entries.len(),
        );
        let result = self.handle_in(read, &span).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    async fn handle_in(&mut self, read: Read, span: &tracing::Span) -> Result<(), Abandon> {
        let started = Instant::now();
        let Read { entries, source } = read;
        self.metrics.add_read(entries.len());
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let batch = Batch::decode(&entries, &self.args.event_type, self.args.max_deliveries);
        batch.link_events(span);
        let inserting = Instant::now();
        let outcomes = self.insert(&batch.orders, &ids).await?;
        let insert_time = inserting.elapsed();
        let done = batch.finish(outcomes);

        self.dead_letter(&done.failed, &ids).await?;
        for letter in &done.failed {
            self.metrics.add_dead_letter(letter.class);
            letter.log("dead-lettered entry");
        }
        self.ack(&ids).await?;
        self.metrics.add_inserted(done.tally.inserted);
        self.metrics.add_already_present(done.tally.already_present);
        self.metrics.add_skipped(done.skipped);
        self.metrics.set_degraded(false);
        self.metrics.observe_batch(started.elapsed());
        tracing::debug!(
            source,
            entries = ids.len(),
            inserted = done.tally.inserted,
            already_present = done.tally.already_present,
            skipped = done.skipped,
            dead_lettered = done.failed.len(),
            decode_ms = done.decode_time.as_millis() as u64,
            insert_ms = insert_time.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch done"
        );
        Ok(())
    }

    /// The batch insert, retried while it fails (see [`batch::insert`]).
    async fn insert(
        &mut self,
        orders: &[NewOrder],
        held: &[String],
    ) -> Result<Vec<Outcome>, Abandon> {
        let mut backoff = Backoff::standard();
        loop {
            let drain = self.drain_timer();
            let attempt = tokio::select! {
                result = batch::insert(&self.pool, orders, self.args.timeouts.db()) => result,
                // A hanging insert must not hold the process past its grace period; cut
                // off, it commits or not, and the redelivered entries find out which.
                () = drain => return Err(Abandon),
            };
            match attempt {
                Ok(outcomes) => return Ok(outcomes),
                Err(e) => {
                    self.pause(&mut backoff, "insert", &e.to_string(), held)
                        .await?;
                }
            }
        }
    }

    async fn dead_letter(&mut self, dead: &[DeadLetter], held: &[String]) -> Result<(), Abandon> {
        if dead.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for letter in dead {
            letter.add_to(&mut pipe, &self.dlq_key);
        }
        let mut backoff = Backoff::standard();
        while let Err(e) = self.group.writer().pipe::<redis::Value>(&pipe).await {
            self.pause(&mut backoff, "dead-letter", &e.to_string(), held)
                .await?;
        }
        Ok(())
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), Abandon> {
        let mut backoff = Backoff::standard();
        while let Err(e) = self.group.ack(ids).await {
            self.pause(&mut backoff, "ack", &e.to_string(), ids).await?;
        }
        Ok(())
    }
}

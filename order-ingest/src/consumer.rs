//! The consumer loop: read a batch, decode, insert it with one statement, dead-letter what can
//! never be stored, acknowledge, repeat.
//!
//! It follows the shape of vector's queue sources: one task, `tokio::select!` between the
//! shutdown signal and one read. There is no timer that starts reads, so reads never overlap
//! (docs/compatibility.md §6.3).
//!
//! The loop is a pipeline: while batch N is inserted (the [`Sink`], in a task of its own, so on
//! another runtime thread), batch N+1 is read and decoded (the [`Reader`], in the loop); once
//! N committed, its dead letters and acknowledgement (the [`Acker`], in a task of its own, on a
//! Redis command connection of its own) run while N+1 is inserted. At most one batch is in the
//! database, one is being acknowledged and one read ahead, so memory is bounded by three
//! batches. Before, read, decode, insert and acknowledge ran strictly one after another and
//! PostgreSQL sat idle while the worker read, decoded and acknowledged (38% of the machine idle
//! during a drain, docs/BENCHMARKS.md). Each batch is still acknowledged only after its insert
//! committed and its dead letters were written; acknowledgements go by id, so their order does
//! not matter, and the next batch's insert waits for the previous acknowledgement to finish
//! before it hands its own over (a Redis outage stalls the pipeline instead of piling up work). Only new entries (`XREADGROUP >`) are read ahead: they can never be entries of the
//! batch in flight, where this consumer's own pending list and `XAUTOCLAIM` could hand those
//! back, so those two are read only with no batch in flight.
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

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use order_store::Pool;
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

/// The sink, idle or finishing one batch in a task of its own.
enum Stage {
    Idle(Box<Sink>),
    /// The task gives the sink back with the batch's size if the batch was abandoned.
    Busy(tokio::task::JoinHandle<(Box<Sink>, Result<(), usize>)>),
    /// Only while switching between the two.
    Empty,
}

impl Stage {
    /// Starts finishing `decoded` in a task. The stage must be idle (settled).
    fn start(&mut self, decoded: Decoded) {
        let Stage::Idle(mut sink) = std::mem::replace(self, Stage::Empty) else {
            unreachable!("a batch is started only on a settled stage")
        };
        *self = Stage::Busy(tokio::spawn(async move {
            let result = sink.finish(decoded).await;
            (sink, result)
        }));
    }

    /// Waits for the batch in flight and for every acknowledgement; `Err` with the number of
    /// entries left pending if one was abandoned.
    async fn settle_all(&mut self) -> Result<(), usize> {
        self.settle().await?;
        match self {
            Stage::Idle(sink) => sink.acks.settle().await,
            _ => Ok(()),
        }
    }

    /// Waits for the insert in flight, if any (its acknowledgement may still be running);
    /// `Err` with the number of entries left pending if it was abandoned.
    async fn settle(&mut self) -> Result<(), usize> {
        match std::mem::replace(self, Stage::Empty) {
            Stage::Busy(task) => match task.await {
                Ok((sink, result)) => {
                    *self = Stage::Idle(sink);
                    result
                }
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
            idle => {
                *self = idle;
                Ok(())
            }
        }
    }
}

/// A batch read and decoded, waiting for (or in) its insert.
struct Decoded {
    entries: Vec<Entry>,
    ids: Vec<String>,
    source: &'static str,
    batch: Batch,
    /// The batch's span, from its decode to its acknowledgement.
    span: tracing::Span,
    started: Instant,
}

/// The shutdown request and when it was first seen, shared by the reader and the sink.
#[derive(Clone)]
struct Stop {
    shutdown: watch::Receiver<bool>,
    seen: Arc<OnceLock<Instant>>,
}

impl Stop {
    fn stopping(&self) -> bool {
        let stop = *self.shutdown.borrow() || self.shutdown.has_changed().is_err();
        if stop {
            self.seen.get_or_init(Instant::now);
        }
        stop
    }

    fn seen(&self) -> Option<Instant> {
        self.seen.get().copied()
    }

    fn drain_expired(&self) -> bool {
        self.stopping() && self.seen().is_some_and(|t| t.elapsed() >= DRAIN_LIMIT)
    }

    /// Completes when the drain time after a shutdown request is spent.
    fn drain_timer(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut shutdown = self.shutdown.clone();
        let seen = self.seen.clone();
        async move {
            let start = if let Some(t) = seen.get() {
                *t
            } else {
                let _ = shutdown.wait_for(|stop| *stop).await;
                *seen.get_or_init(Instant::now)
            };
            tokio::time::sleep_until((start + DRAIN_LIMIT).into()).await;
        }
    }

    /// Waits `delay` before the next attempt of a failed step. Returns `Err` once shutdown was
    /// requested and the drain time is spent.
    async fn wait(&self, delay: Duration) -> Result<(), Abandon> {
        if self.drain_expired() {
            return Err(Abandon);
        }
        if let Some(t) = self.seen() {
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
}

/// Counts and logs a transient failure; returns how long to wait before the next attempt.
fn note_failure(
    metrics: &Metrics,
    backoff: &mut Backoff,
    step: &str,
    error: &str,
    held: usize,
) -> Duration {
    metrics.add_retry();
    metrics.set_degraded(true);
    let delay = backoff.next_delay();
    tracing::warn!(
        step,
        error = %error,
        attempt = backoff.attempts(),
        retry_in_ms = delay.as_millis() as u64,
        held,
        "transient failure; retrying"
    );
    delay
}

pub struct Consumer {
    reader: Reader,
    sink: Sink,
}

/// The read side: the group's reader connection and its command connection for the pending
/// list and claims; decodes what it reads.
struct Reader {
    args: StreamArgs,
    group: Group,
    metrics: Arc<Metrics>,
    stop: Stop,
    /// False until this consumer's own pending entries (id `0`) have all been read.
    pending_done: bool,
    claim_cursor: String,
    next_claim: Instant,
    /// Shared with [`Sink::ahead`].
    ahead: Arc<Mutex<Vec<String>>>,
}

/// The write side: insert, dead letters and acknowledgement of one decoded batch, on a Redis
/// command connection of its own (so an `XACK` never waits behind a read's `XPENDING`).
struct Sink {
    timeout: Duration,
    /// For refreshing the idle time of held entries only.
    group: Group,
    pool: Pool,
    metrics: Arc<Metrics>,
    stop: Stop,
    /// The ids of the batch read ahead while this one is inserted: held too, so their idle
    /// time is refreshed with the batch's own while a step is retried.
    ahead: Arc<Mutex<Vec<String>>>,
    /// Dead letters and acknowledgement of the batch committed last, which run while the
    /// next batch is inserted.
    acks: AckStage,
}

/// Dead letters and acknowledgement of committed batches, on a Redis command connection of
/// its own.
struct Acker {
    group: Group,
    dlq_key: String,
    metrics: Arc<Metrics>,
    stop: Stop,
}

/// A batch whose insert committed: what is left is its dead letters and acknowledgement.
struct Committed {
    decoded: Decoded,
    outcomes: Vec<Outcome>,
    insert_time: Duration,
}

/// The acker, idle or acknowledging one committed batch in a task of its own.
enum AckStage {
    Idle(Box<Acker>),
    /// The task gives the acker back with the batch's size if the batch was abandoned.
    Busy(tokio::task::JoinHandle<(Box<Acker>, Result<(), usize>)>),
    /// Only while switching between the two.
    Empty,
}

impl AckStage {
    /// Starts acknowledging `committed` in a task. The stage must be idle (settled).
    fn start(&mut self, committed: Committed) {
        let AckStage::Idle(mut acker) = std::mem::replace(self, AckStage::Empty) else {
            unreachable!("an acknowledgement is started only on a settled stage")
        };
        *self = AckStage::Busy(tokio::spawn(async move {
            let count = committed.decoded.entries.len();
            let result = acker.finish(committed).await.map_err(|Abandon| count);
            (acker, result)
        }));
    }

    /// Waits for the acknowledgement in flight, if any; `Err` with its batch's size if it was
    /// abandoned.
    async fn settle(&mut self) -> Result<(), usize> {
        match std::mem::replace(self, AckStage::Empty) {
            AckStage::Busy(task) => match task.await {
                Ok((acker, result)) => {
                    *self = AckStage::Idle(acker);
                    result
                }
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
            idle => {
                *self = idle;
                Ok(())
            }
        }
    }
}

impl Consumer {
    /// `shutdown` turning `true` (or its sender being dropped) asks the loop to stop.
    pub fn new(
        args: StreamArgs,
        pool: Pool,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, redis::RedisError> {
        let name = args.resolved_consumer_name();
        let stop = Stop {
            shutdown,
            seen: Arc::new(OnceLock::new()),
        };
        let ahead = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink {
            timeout: args.timeouts.db(),
            group: Group::new(&args, name.clone())?.count_errors(metrics.redis_errors()),
            pool,
            metrics: metrics.clone(),
            stop: stop.clone(),
            ahead: ahead.clone(),
            acks: AckStage::Idle(Box::new(Acker {
                group: Group::new(&args, name.clone())?.count_errors(metrics.redis_errors()),
                dlq_key: args.dlq_key(),
                metrics: metrics.clone(),
                stop: stop.clone(),
            })),
        };
        Ok(Self {
            reader: Reader {
                group: Group::new(&args, name)?.count_errors(metrics.redis_errors()),
                args,
                metrics,
                stop,
                pending_done: false,
                claim_cursor: "0-0".to_owned(),
                next_claim: Instant::now(),
                ahead,
            },
            sink,
        })
    }

    pub fn consumer_name(&self) -> &str {
        self.reader.group.consumer()
    }

    /// Runs until shutdown is requested.
    pub async fn run(self) -> Exit {
        // Boxed: the loop's state (the reader, the sink, a read in flight) is large.
        Box::pin(self.run_boxed()).await
    }

    async fn run_boxed(mut self) -> Exit {
        tracing::info!(
            stream = %self.reader.args.stream_key,
            group = %self.reader.args.consumer_group,
            consumer = %self.reader.group.consumer(),
            "consumer starting"
        );
        let start = self.reader.args.group_start.clone();
        if self.reader.ensure_group(&start).await.is_err() {
            return Exit::Clean;
        }
        let mut backoff = Backoff::standard();
        let mut shutdown = self.reader.stop.shutdown.clone();
        let Consumer { mut reader, sink } = self;
        // The sink, or the task finishing the batch decoded by the previous turn (which runs
        // on another runtime thread while this turn reads and decodes).
        let mut stage = Stage::Idle(Box::new(sink));
        loop {
            if reader.stop.stopping() {
                break;
            }
            if !reader.reads_new_only() {
                // Own pending entries and claims may be entries of the batch in flight.
                if let Err(entries) = stage.settle_all().await {
                    return Exit::Abandoned { entries };
                }
            }
            // Read and decode while the previous batch is inserted.
            let read = reader.read_or_stop(&mut shutdown).await.map(|read| {
                read.map(|read| (!read.entries.is_empty()).then(|| reader.decode(read)))
            });
            if let Err(count) = stage.settle().await {
                // What was read meanwhile stays pending too: nothing is lost.
                let read = match &read {
                    Some(Ok(Some(decoded))) => decoded.entries.len(),
                    _ => 0,
                };
                return Exit::Abandoned {
                    entries: count + read,
                };
            }
            reader.held_ahead(&[]);
            let Some(read) = read else { continue };
            match read {
                Ok(decoded) => {
                    backoff.reset();
                    reader.metrics.set_degraded(false);
                    if let Some(decoded) = decoded {
                        stage.start(decoded);
                    }
                }
                Err(e) => {
                    if e.is_no_group() {
                        tracing::warn!(stream = %reader.args.stream_key, "consumer group is gone; recreating it");
                        // Whatever the stream holds now arrived after the group was lost: read it all.
                        if reader.ensure_group("0").await.is_err()
                            || reader
                                .pause(&mut backoff, "read", &e.to_string())
                                .await
                                .is_err()
                        {
                            break;
                        }
                        continue;
                    }
                    // Entries may have been delivered to a read whose answer was lost:
                    // read this consumer's pending list before new entries.
                    reader.pending_done = false;
                    if reader
                        .pause(&mut backoff, "read", &e.to_string())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        if let Err(entries) = stage.settle_all().await {
            return Exit::Abandoned { entries };
        }
        let Stage::Idle(sink) = stage else {
            unreachable!("settled")
        };
        Consumer {
            reader,
            sink: *sink,
        }
        .drain_own_pending()
        .await
    }

    /// On shutdown: a read cancelled mid-flight may have had entries delivered to it, so this
    /// consumer's pending list is read once more and finished, leaving nothing pending on it.
    async fn drain_own_pending(&mut self) -> Exit {
        let mut backoff = Backoff::standard();
        loop {
            match self.reader.group.read_own_pending().await {
                Ok(entries) if entries.is_empty() => break,
                Ok(entries) => {
                    let decoded = self.reader.decode(Read {
                        entries,
                        source: "pending",
                    });
                    if let Err(entries) = self.sink.finish(decoded).await {
                        return Exit::Abandoned { entries };
                    }
                    if let Err(entries) = self.sink.acks.settle().await {
                        return Exit::Abandoned { entries };
                    }
                }
                // No group, so nothing pending either.
                Err(e) if e.is_no_group() => break,
                Err(e) => {
                    if self
                        .reader
                        .pause(&mut backoff, "read pending", &e.to_string())
                        .await
                        .is_err()
                    {
                        return Exit::Abandoned { entries: 0 };
                    }
                }
            }
        }
        self.reader.metrics.set_degraded(false);
        tracing::info!(consumer = %self.reader.group.consumer(), "consumer stopped; nothing left pending");
        Exit::Clean
    }
}

impl Reader {
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
                    if self.stop.stopping() {
                        return Err(Abandon);
                    }
                    self.pause(&mut backoff, "create group", &e.to_string())
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
    ) -> Result<(), Abandon> {
        let delay = note_failure(&self.metrics, backoff, step, error, 0);
        self.stop.wait(delay).await
    }

    /// Whether the next read is `XREADGROUP >` only, which never returns an entry that was
    /// delivered before (so never one of the batch in flight).
    fn reads_new_only(&self) -> bool {
        self.pending_done && Instant::now() < self.next_claim
    }

    /// The next read, or `None` when a shutdown request woke it and it did not answer in time.
    async fn read_or_stop(
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

    /// Records the ids read ahead of the batch in flight (see [`Sink::ahead`]).
    fn held_ahead(&self, ids: &[String]) {
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
    fn decode(&self, read: Read) -> Decoded {
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

impl Sink {
    /// Inserts one decoded batch in its span, then hands it to the acker once the previous
    /// batch is acknowledged: its dead letters and acknowledgement run while the next batch
    /// is inserted. `Err` with the number of entries left pending when the drain time ran out.
    async fn finish(&mut self, decoded: Decoded) -> Result<(), usize> {
        let count = decoded.entries.len();
        let span = decoded.span.clone();
        let inserting = Instant::now();
        let inserted = self
            .insert(&decoded.batch.orders, &decoded.ids)
            .instrument(span.clone())
            .await;
        let insert_time = inserting.elapsed();
        let previous = self.acks.settle().await;
        let outcomes = match (inserted, previous) {
            (Ok(outcomes), Ok(())) => outcomes,
            (inserted, previous) => {
                if inserted.is_err() {
                    span.record("otel.status_code", "ERROR");
                }
                return Err(count + previous.err().unwrap_or(0));
            }
        };
        self.acks.start(Committed {
            decoded,
            outcomes,
            insert_time,
        });
        Ok(())
    }

    /// Logs a transient failure, keeps the held entries from being claimed, and waits before
    /// the next attempt. Returns `Err` once shutdown was requested and the drain time is spent.
    async fn pause(
        &mut self,
        backoff: &mut Backoff,
        step: &str,
        error: &str,
        held: &[String],
    ) -> Result<(), Abandon> {
        let mut held = held.to_vec();
        held.extend(
            self.ahead
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .cloned(),
        );
        let delay = note_failure(&self.metrics, backoff, step, error, held.len());
        if !held.is_empty() {
            self.group.refresh_idle(&held).await;
        }
        self.stop.wait(delay).await
    }

    /// The batch insert, retried while it fails (see [`batch::insert`]).
    async fn insert(
        &mut self,
        orders: &[order_store::NewOrder],
        held: &[String],
    ) -> Result<Vec<Outcome>, Abandon> {
        let mut backoff = Backoff::standard();
        loop {
            let drain = self.stop.drain_timer();
            let attempt = tokio::select! {
                result = batch::insert(&self.pool, orders, self.timeout) => result,
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
}

impl Acker {
    /// Dead letters and acknowledgement of one committed batch, in the batch's span.
    async fn finish(&mut self, committed: Committed) -> Result<(), Abandon> {
        let span = committed.decoded.span.clone();
        let result = self.finish_in(committed).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    async fn finish_in(&mut self, committed: Committed) -> Result<(), Abandon> {
        let Committed {
            decoded,
            outcomes,
            insert_time,
        } = committed;
        let Decoded {
            entries,
            ids,
            source,
            batch,
            span: _,
            started,
        } = decoded;
        let done = batch.finish(&entries, outcomes);

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

    /// Logs a transient failure, keeps the held entries from being claimed, and waits before
    /// the next attempt. Returns `Err` once shutdown was requested and the drain time is spent.
    async fn pause(
        &mut self,
        backoff: &mut Backoff,
        step: &str,
        error: &str,
        held: &[String],
    ) -> Result<(), Abandon> {
        let delay = note_failure(&self.metrics, backoff, step, error, held.len());
        if !held.is_empty() {
            self.group.refresh_idle(held).await;
        }
        self.stop.wait(delay).await
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

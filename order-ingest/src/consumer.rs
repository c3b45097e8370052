//! The consumer loop: read a batch, decode, insert it with one statement, dead-letter what can
//! never be stored, acknowledge, repeat.
//!
//! It follows the shape of vector's queue sources: one task, `tokio::select!` between the
//! shutdown signal and one read, and the batch that was read is always finished (inserted,
//! dead-lettered, acknowledged) before the next read starts. There is no timer that starts
//! reads, so reads never overlap (CONTRACT defect 3) and memory is bounded by one batch.
//!
//! Failure handling:
//! - Permanent (the entry itself is wrong): dead letter, then acknowledge.
//! - Transient (database or Redis unreachable, timeouts, pool exhausted): nothing is
//!   acknowledged or dead-lettered; the step is retried with capped exponential backoff and
//!   jitter until it succeeds (CONTRACT defect 2). While it holds a batch, the consumer
//!   refreshes the idle time of its entries (`XCLAIM ... JUSTID`, which does not count as a
//!   delivery), so a long outage does not let other pods claim them and push them over
//!   `--max-deliveries`.
//! - Dead consumers: entries idle on another consumer for `--claim-idle-ms` are claimed with
//!   `XAUTOCLAIM` (CONTRACT defect 1); an entry delivered more than `--max-deliveries` times
//!   is dead-lettered with its delivery count.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use order_store::orders::{insert_if_absent, InsertOutcome, Rejection};
use order_store::{NewOrder, Pool, StoreError};
use redis::streams::{StreamAutoClaimReply, StreamPendingCountReply, StreamReadReply};
use tokio::sync::watch;

use crate::config::StreamArgs;
use crate::dlq::DeadLetter;
use crate::event::{decode, Decoded, ErrorClass};
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::stream::{entries_of, unblock, Entry, RedisConn, RedisFailure};

/// Longest a batch insert may take before it is treated as a lost connection.
const INSERT_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of non-blocking Redis commands (XACK, XADD, XAUTOCLAIM, XPENDING).
const COMMAND_DEADLINE: Duration = Duration::from_secs(5);
/// After SIGTERM, how long the batch in flight may keep retrying before it is left pending
/// for another consumer: well inside Kubernetes' default 30 s grace period.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);

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

/// A batch read from the stream, and where from (for logs).
struct Batch {
    entries: Vec<Entry>,
    source: &'static str,
}

pub struct Consumer {
    args: StreamArgs,
    name: String,
    dlq_key: String,
    pool: Pool,
    reader: RedisConn,
    writer: RedisConn,
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
        let client = redis::Client::open(args.redis_url.as_str())?;
        // The read deadline is BLOCK plus a margin (FIELD-NOTES 1 and 3).
        let read_deadline = args.block() + Duration::from_secs(2);
        Ok(Self {
            name: args.resolved_consumer_name(),
            dlq_key: args.dlq_key(),
            reader: RedisConn::new(client.clone(), read_deadline),
            writer: RedisConn::new(client, COMMAND_DEADLINE),
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
        &self.name
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
            consumer = %self.name,
            "consumer starting"
        );
        if self.ensure_group("$").await.is_err() {
            return Exit::Clean;
        }
        let mut backoff = Backoff::standard();
        let mut shutdown = self.shutdown.clone();
        loop {
            if self.stopping() {
                break;
            }
            let batch = {
                let reader_id = self.reader.client_id();
                let client = self.reader.client().clone();
                let read_deadline = self.reader.deadline();
                let read = self.next_batch();
                tokio::pin!(read);
                tokio::select! {
                    batch = &mut read => batch,
                    _ = shutdown.changed() => {
                        // Wake the parked read rather than drop it: entries the server hands it
                        // before it wakes are then processed and acknowledged here, instead of
                        // staying pending on a consumer that is about to exit.
                        unblock(&client, reader_id.load(Ordering::SeqCst)).await;
                        match tokio::time::timeout(read_deadline, &mut read).await {
                            Ok(batch) => batch,
                            Err(_) => continue,
                        }
                    }
                }
            };
            match batch {
                Ok(batch) => {
                    backoff.reset();
                    self.metrics.set_degraded(false);
                    if batch.entries.is_empty() {
                        continue;
                    }
                    let count = batch.entries.len();
                    if self.handle(batch).await.is_err() {
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
            match self.read_own_pending().await {
                Ok(batch) if batch.entries.is_empty() => break,
                Ok(batch) => {
                    let count = batch.entries.len();
                    if self.handle(batch).await.is_err() {
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
        tracing::info!(consumer = %self.name, "consumer stopped; nothing left pending");
        Exit::Clean
    }

    /// `XGROUP CREATE <stream> <group> <start> MKSTREAM`; an existing group is fine.
    async fn ensure_group(&mut self, start: &str) -> Result<(), Abandon> {
        let mut backoff = Backoff::standard();
        loop {
            let created: Result<(), RedisFailure> = self
                .writer
                .query(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(&self.args.stream_key)
                        .arg(&self.args.consumer_group)
                        .arg(start)
                        .arg("MKSTREAM"),
                )
                .await;
            match created {
                Ok(()) => {
                    tracing::info!(group = %self.args.consumer_group, start, "created consumer group");
                    return Ok(());
                }
                Err(RedisFailure::Redis(e)) if e.code() == Some("BUSYGROUP") => return Ok(()),
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
            self.refresh_idle(held).await;
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

    /// Resets the idle time of entries this consumer is still working on, so that nobody
    /// claims them; `JUSTID` keeps their delivery counts as they are.
    async fn refresh_idle(&mut self, ids: &[String]) {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.args.stream_key)
            .arg(&self.args.consumer_group)
            .arg(&self.name)
            .arg(0)
            .arg(ids)
            .arg("JUSTID");
        if let Err(e) = self.writer.query::<redis::Value>(&cmd).await {
            tracing::debug!(error = %e, "could not refresh idle time of held entries");
        }
    }

    async fn next_batch(&mut self) -> Result<Batch, RedisFailure> {
        if !self.pending_done {
            let batch = self.read_own_pending().await?;
            if !batch.entries.is_empty() {
                return Ok(batch);
            }
            self.pending_done = true;
        }
        if Instant::now() >= self.next_claim {
            let batch = self.claim().await?;
            if !batch.entries.is_empty() {
                return Ok(batch);
            }
        }
        self.read_new().await
    }

    fn read_cmd(&self, id: &str, block: bool) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.args.consumer_group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.args.batch_size);
        if block {
            cmd.arg("BLOCK").arg(self.args.block_ms);
        }
        cmd.arg("STREAMS").arg(&self.args.stream_key).arg(id);
        cmd
    }

    async fn read_new(&mut self) -> Result<Batch, RedisFailure> {
        let cmd = self.read_cmd(">", true);
        let reply: Option<StreamReadReply> = self.reader.query(&cmd).await?;
        let entries = entries_of(reply)
            .iter()
            .map(|id| Entry::from_stream_id(id, 1))
            .collect();
        Ok(Batch {
            entries,
            source: "new",
        })
    }

    /// This consumer's own pending entries (id `0`): those of a previous run under the same
    /// name, or of a read whose answer was lost.
    async fn read_own_pending(&mut self) -> Result<Batch, RedisFailure> {
        let cmd = self.read_cmd("0", false);
        let reply: Option<StreamReadReply> = self.writer.query(&cmd).await?;
        let ids = entries_of(reply);
        let entries = self.with_delivery_counts(&ids).await?;
        // A pending entry whose stream entry was deleted comes back with no fields: it can
        // only be acknowledged, and `handle` does that (no payload → skipped).
        Ok(Batch {
            entries,
            source: "pending",
        })
    }

    /// One `XAUTOCLAIM` step over the group's pending list, resuming where the last one ended.
    async fn claim(&mut self) -> Result<Batch, RedisFailure> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.args.stream_key)
            .arg(&self.args.consumer_group)
            .arg(&self.name)
            .arg(self.args.claim_idle_ms)
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(self.args.batch_size);
        let reply: StreamAutoClaimReply = self.writer.query(&cmd).await?;
        if reply.next_stream_id == "0-0" {
            "0-0".clone_into(&mut self.claim_cursor);
            self.next_claim = Instant::now() + self.claim_interval();
        } else {
            self.claim_cursor = reply.next_stream_id;
        }
        if !reply.deleted_ids.is_empty() {
            tracing::info!(
                count = reply.deleted_ids.len(),
                "dropped pending entries that were deleted from the stream"
            );
        }
        if reply.claimed.is_empty() {
            return Ok(Batch {
                entries: Vec::new(),
                source: "claimed",
            });
        }
        // They are ours now: if anything below fails, they are read again as own pending.
        self.pending_done = false;
        let entries = self.with_delivery_counts(&reply.claimed).await?;
        self.metrics.add_claimed(entries.len());
        tracing::info!(
            count = entries.len(),
            "claimed idle entries of another consumer"
        );
        self.pending_done = true;
        Ok(Batch {
            entries,
            source: "claimed",
        })
    }

    /// Entries with their delivery counts, from `XPENDING` over their id range.
    async fn with_delivery_counts(
        &mut self,
        ids: &[redis::streams::StreamId],
    ) -> Result<Vec<Entry>, RedisFailure> {
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return Ok(Vec::new());
        };
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.args.stream_key)
            .arg(&self.args.consumer_group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(ids.len())
            .arg(&self.name);
        let reply: StreamPendingCountReply = self.writer.query(&cmd).await?;
        let counts: HashMap<String, u64> = reply
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered as u64))
            .collect();
        Ok(ids
            .iter()
            .map(|id| Entry::from_stream_id(id, counts.get(&id.id).copied().unwrap_or(1)))
            .collect())
    }

    /// Finishes one batch: decode, one insert, dead letters, one acknowledgement.
    async fn handle(&mut self, batch: Batch) -> Result<(), Abandon> {
        let started = Instant::now();
        let Batch { entries, source } = batch;
        self.metrics.add_read(entries.len());
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let mut dead = Vec::new();
        let mut orders: Vec<NewOrder> = Vec::new();
        let mut order_meta: Vec<(usize, String, Option<String>)> = Vec::new();
        let mut skipped = 0;
        for (i, entry) in entries.iter().enumerate() {
            match decode(entry.payload.as_deref(), &self.args.event_type) {
                Ok(Decoded::Skip(skip)) => {
                    skipped += 1;
                    tracing::info!(
                        streamId = %entry.id,
                        eventId = entry.event_id.as_deref().unwrap_or_default(),
                        reason = skip.reason(),
                        "skipped entry"
                    );
                }
                Err(error) => dead.push(DeadLetter::new(entry, None, error.class, error.message)),
                Ok(Decoded::Order(event)) => {
                    if entry.deliveries > self.args.max_deliveries {
                        dead.push(
                            DeadLetter::new(
                                entry,
                                Some(&event.event_id),
                                ErrorClass::MaxDeliveriesExceeded,
                                format!(
                                    "delivered {} times, more than --max-deliveries {}",
                                    entry.deliveries, self.args.max_deliveries
                                ),
                            )
                            .with_order(&event.order, event.checkout_session_id.as_deref()),
                        );
                        continue;
                    }
                    order_meta.push((i, event.event_id, event.checkout_session_id));
                    orders.push(event.order);
                }
            }
        }

        let decoded_at = Instant::now();
        let outcomes = self.insert(&orders, &ids).await?;
        let insert_time = decoded_at.elapsed();
        let (mut inserted, mut duplicates) = (0, 0);
        for ((order, (i, event_id, session)), outcome) in
            orders.iter().zip(&order_meta).zip(outcomes)
        {
            let entry = &entries[*i];
            let session = session.as_deref().unwrap_or_default();
            match outcome {
                Stored::Inserted => {
                    inserted += 1;
                    tracing::info!(
                        orderId = %order.id,
                        orderNumber = %order.order_number,
                        eventId = %event_id,
                        checkoutSessionId = session,
                        streamId = %entry.id,
                        "inserted order"
                    );
                }
                Stored::Duplicate => {
                    duplicates += 1;
                    tracing::info!(
                        orderId = %order.id,
                        orderNumber = %order.order_number,
                        eventId = %event_id,
                        checkoutSessionId = session,
                        streamId = %entry.id,
                        "duplicate order: already stored"
                    );
                }
                Stored::Rejected(class, message) => {
                    dead.push(
                        DeadLetter::new(entry, Some(event_id), class, message)
                            .with_order(order, Some(session).filter(|s| !s.is_empty())),
                    );
                }
            }
        }

        self.dead_letter(&dead, &ids).await?;
        for letter in &dead {
            self.metrics.add_dead_letter(letter.class);
            let order = letter.order.as_ref();
            tracing::warn!(
                orderId = order.map(|o| o.order_id.to_string()).unwrap_or_default(),
                orderNumber = order.map(|o| o.order_number.as_str()).unwrap_or_default(),
                checkoutSessionId = order
                    .and_then(|o| o.checkout_session_id.as_deref())
                    .unwrap_or_default(),
                streamId = %letter.stream_id,
                eventId = %letter.event_id,
                errorClass = letter.class.as_str(),
                error = %letter.error,
                deliveries = letter.deliveries,
                "dead-lettered entry"
            );
        }
        self.ack(&ids).await?;
        self.metrics.add_inserted(inserted);
        self.metrics.add_duplicates(duplicates);
        self.metrics.add_skipped(skipped);
        self.metrics.set_degraded(false);
        self.metrics.observe_batch(started.elapsed());
        tracing::debug!(
            source,
            entries = ids.len(),
            inserted,
            duplicates,
            skipped,
            dead_lettered = dead.len(),
            decode_ms = (decoded_at - started).as_millis() as u64,
            insert_ms = insert_time.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch done"
        );
        Ok(())
    }

    /// One `insert_if_absent` for the batch, retried while the failure is transient.
    ///
    /// A non-transient error that the store did not classify (no per-order rejection) is
    /// narrowed down by inserting the orders one at a time: orders that fail alone while
    /// others of the batch succeed are rejected (`store_rejected`). When every order fails the
    /// same way the cause is the database, not the data (a permission, a missing table), so it
    /// is retried like an outage instead of dead-lettering good orders.
    async fn insert(
        &mut self,
        orders: &[NewOrder],
        held: &[String],
    ) -> Result<Vec<Stored>, Abandon> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let mut backoff = Backoff::standard();
        loop {
            let drain = self.drain_timer();
            let attempt = tokio::select! {
                result = insert_batch(&self.pool, orders) => result,
                // A hanging insert must not hold the process past its grace period; cut
                // off, it commits or not, and the redelivered entries find out which.
                () = drain => return Err(Abandon),
            };
            let error = match attempt {
                Ok(outcomes) => return Ok(outcomes.into_iter().map(Stored::from).collect()),
                Err(e) if e.is_transient() => e,
                Err(e) => {
                    tracing::error!(error = %e, "batch insert failed; inserting one by one");
                    match insert_one_by_one(&self.pool, orders).await {
                        Ok(Some(outcomes)) => return Ok(outcomes),
                        Ok(None) => e,
                        Err(transient) => transient,
                    }
                }
            };
            self.pause(&mut backoff, "insert", &error.to_string(), held)
                .await?;
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
        loop {
            match self.writer.pipe::<redis::Value>(&pipe).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    self.pause(&mut backoff, "dead-letter", &e.to_string(), held)
                        .await?;
                }
            }
        }
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), Abandon> {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.args.stream_key)
            .arg(&self.args.consumer_group)
            .arg(ids);
        let mut backoff = Backoff::standard();
        loop {
            match self.writer.query::<u64>(&cmd).await {
                Ok(_) => return Ok(()),
                // The group is gone, and with it the pending entries: nothing left to ack.
                Err(e) if e.is_no_group() => return Ok(()),
                Err(e) => self.pause(&mut backoff, "ack", &e.to_string(), ids).await?,
            }
        }
    }
}

/// What became of one order of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stored {
    Inserted,
    Duplicate,
    Rejected(ErrorClass, String),
}

impl From<InsertOutcome> for Stored {
    fn from(outcome: InsertOutcome) -> Self {
        match outcome {
            InsertOutcome::Inserted => Stored::Inserted,
            InsertOutcome::AlreadyPresent => Stored::Duplicate,
            InsertOutcome::Rejected(Rejection { kind, message }) => {
                Stored::Rejected(kind.into(), message)
            }
        }
    }
}

async fn insert_batch(pool: &Pool, orders: &[NewOrder]) -> Result<Vec<InsertOutcome>, StoreError> {
    let work = async {
        let mut conn = pool.get().await?;
        insert_if_absent(&mut conn, orders).await
    };
    tokio::time::timeout(INSERT_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "insert did not finish within {INSERT_TIMEOUT:?}"
            )))
        })
}

/// `Ok(None)`: every order failed, so the batch as a whole is to be retried.
/// `Err`: a transient failure on the way.
async fn insert_one_by_one(
    pool: &Pool,
    orders: &[NewOrder],
) -> Result<Option<Vec<Stored>>, StoreError> {
    let mut outcomes = Vec::with_capacity(orders.len());
    // Whether any answer is about the orders rather than the database: a success, or a value
    // the database refuses (which fails the same way however often it is retried).
    let mut decided = false;
    for order in orders {
        match insert_batch(pool, std::slice::from_ref(order)).await {
            Ok(mut one) => {
                decided = true;
                outcomes.push(one.pop().map_or(Stored::Duplicate, Stored::from));
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(StoreError::InvalidData(message)) => {
                decided = true;
                outcomes.push(Stored::Rejected(ErrorClass::InvalidValue, message));
            }
            Err(e) => outcomes.push(Stored::Rejected(ErrorClass::StoreRejected, e.to_string())),
        }
    }
    Ok(decided.then_some(outcomes))
}

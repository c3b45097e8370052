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
use crate::retry::Backoff;
use crate::stream::{Entry, RedisFailure};
use tracing::Instrument as _;

mod reader;
mod sink;
mod stage;

use stage::{note_failure, Stage, Stop};

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
    acks: Stage<Acker>,
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

/// Waits for the batch in flight and for every acknowledgement; `Err` with the number of
/// entries left pending if one was abandoned.
async fn settle_all(stage: &mut Stage<Sink>) -> Result<(), usize> {
    stage.settle().await?;
    match stage.idle_mut() {
        Some(sink) => sink.acks.settle().await,
        None => Ok(()),
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
            acks: Stage::idle(Acker {
                group: Group::new(&args, name.clone())?.count_errors(metrics.redis_errors()),
                dlq_key: args.dlq_key(),
                metrics: metrics.clone(),
                stop: stop.clone(),
            }),
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
        let mut stage = Stage::idle(sink);
        loop {
            if reader.stop.stopping() {
                break;
            }
            if !reader.reads_new_only() {
                // Own pending entries and claims may be entries of the batch in flight.
                if let Err(entries) = settle_all(&mut stage).await {
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
                        let started = stage
                            .start(|mut sink| async move {
                                let result = sink.finish(decoded).await;
                                (sink, result)
                            })
                            .await;
                        if let Err(entries) = started {
                            return Exit::Abandoned { entries };
                        }
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
        if let Err(entries) = settle_all(&mut stage).await {
            return Exit::Abandoned { entries };
        }
        // Settled: the sink is idle.
        let Some(sink) = stage.into_idle() else {
            return Exit::Abandoned { entries: 0 };
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

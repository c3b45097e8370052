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
//! batches, and PostgreSQL is kept busy while the next batch is read and decoded
//! (docs/BENCHMARKS.md §1 measures the drain rate). Each batch is acknowledged only after its insert
//! committed and its dead letters were written; acknowledgements go by id, so their order does
//! not matter, and the next batch's insert waits for the previous acknowledgement to finish
//! before it hands its own over (a Redis outage stalls the pipeline instead of piling up work).
//! Only new entries (`XREADGROUP >`) are read ahead: they can never be entries of the batch in
//! flight, where this consumer's own pending list and `XAUTOCLAIM` could hand those back, so
//! those two are read only with no batch in flight.
//!
//! Top-down: this file is the loop; [`reader`], [`sink`] and [`acker`] are its three stages,
//! each with its state and its behaviour; [`stage`] runs a stage's job in a task of its own and
//! holds the shutdown request they all watch.
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

use order_store::Pool;
use tokio::sync::watch;

use crate::config::StreamArgs;
use crate::group::Group;
use crate::metrics::Metrics;
use crate::retry::Backoff;

mod acker;
mod reader;
mod sink;
mod stage;

use acker::Acker;
use reader::{Read, Reader};
use sink::Sink;
use stage::{Holder, Stage, Stop};

/// How [`Consumer::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown requested and everything read was acknowledged.
    Clean,
    /// Shutdown requested while a dependency was down.
    Abandoned(Abandoned),
}

/// The drain time after a shutdown request ran out with entries unfinished. They stay pending,
/// so nothing is lost: another consumer claims them, or this one reads them again on restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Abandoned {
    /// Entries left pending, as far as the stage that gave up knew them.
    pub entries: usize,
}

impl Abandoned {
    /// These and `entries` more.
    #[must_use]
    fn with(self, entries: usize) -> Self {
        Self {
            entries: self.entries + entries,
        }
    }
}

impl From<Abandoned> for Exit {
    fn from(abandoned: Abandoned) -> Self {
        Exit::Abandoned(abandoned)
    }
}

pub struct Consumer {
    reader: Reader,
    sink: Sink,
}

/// Waits for the batch in flight and for every acknowledgement.
async fn settle_all(stage: &mut Stage<Sink>) -> Result<(), Abandoned> {
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
        // One group handle, so one command connection, per stage.
        let group =
            || Group::new(&args, name.clone()).map(|g| g.count_errors(metrics.redis_errors()));
        let ahead = Arc::new(Mutex::new(Vec::new()));
        let holder = |group| Holder {
            group,
            metrics: metrics.clone(),
            stop: stop.clone(),
        };
        let acker = Acker::new(args.dlq_key(), holder(group()?));
        let sink = Sink::new(
            args.timeouts.db(),
            pool,
            holder(group()?),
            ahead.clone(),
            acker,
        );
        let reader = Reader::new(group()?, args, metrics, stop, ahead);
        Ok(Self { reader, sink })
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
                if let Err(abandoned) = settle_all(&mut stage).await {
                    return abandoned.into();
                }
            }
            // Read and decode while the previous batch is inserted.
            let read = reader.read_or_stop(&mut shutdown).await.map(|read| {
                read.map(|read| (!read.entries.is_empty()).then(|| reader.decode(read)))
            });
            if let Err(abandoned) = stage.settle().await {
                // What was read meanwhile stays pending too: nothing is lost.
                let read = match &read {
                    Some(Ok(Some(decoded))) => decoded.entries.len(),
                    _ => 0,
                };
                return abandoned.with(read).into();
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
                        if let Err(abandoned) = started {
                            return abandoned.into();
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
        if let Err(abandoned) = settle_all(&mut stage).await {
            return abandoned.into();
        }
        // Settled: the sink is idle.
        let Some(sink) = stage.into_idle() else {
            return Abandoned::default().into();
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
                    if let Err(abandoned) = self.sink.finish(decoded).await {
                        return abandoned.into();
                    }
                    if let Err(abandoned) = self.sink.acks.settle().await {
                        return abandoned.into();
                    }
                }
                // No group, so nothing pending either.
                Err(e) if e.is_no_group() => break,
                Err(e) => {
                    if let Err(abandoned) = self
                        .reader
                        .pause(&mut backoff, "read pending", &e.to_string())
                        .await
                    {
                        return abandoned.into();
                    }
                }
            }
        }
        self.reader.metrics.set_degraded(false);
        tracing::info!(consumer = %self.reader.group.consumer(), "consumer stopped; nothing left pending");
        Exit::Clean
    }
}

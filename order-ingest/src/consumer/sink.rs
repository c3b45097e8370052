//! The insert stage: one decoded batch into orderdb with one statement, retried while the
//! database is unavailable, then handed to the acker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use order_store::Pool;
use tracing::Instrument as _;

use super::acker::{Acker, Committed};
use super::reader::Decoded;
use super::stage::{Holder, Stage};
use super::Abandoned;
use crate::batch::{self, Outcome};
use crate::retry::Backoff;

/// The insert stage. The dead letters and acknowledgement of a committed batch are the
/// acker's, on a Redis command connection of its own (so an `XACK` never waits behind a read's
/// `XPENDING`).
pub(super) struct Sink {
    timeout: Duration,
    pool: Pool,
    /// Its group handle is for refreshing the idle time of held entries only.
    holder: Holder,
    /// The ids of the batch read ahead while this one is inserted: held too, so their idle
    /// time is refreshed with the batch's own while a step is retried.
    ahead: Arc<Mutex<Vec<String>>>,
    /// Dead letters and acknowledgement of the batch committed last, which run while the
    /// next batch is inserted.
    pub(super) acks: Stage<Acker>,
}

impl Sink {
    pub(super) fn new(
        timeout: Duration,
        pool: Pool,
        holder: Holder,
        ahead: Arc<Mutex<Vec<String>>>,
        acker: Acker,
    ) -> Self {
        Self {
            timeout,
            pool,
            holder,
            ahead,
            acks: Stage::idle(acker),
        }
    }

    /// Inserts one decoded batch in its span, then hands it to the acker once the previous
    /// batch is acknowledged: its dead letters and acknowledgement run while the next batch
    /// is inserted. `Err` when the drain time ran out, counting this batch and the previous
    /// one if that was abandoned too.
    pub(super) async fn finish(&mut self, decoded: Decoded) -> Result<(), Abandoned> {
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
                return Err(previous.err().unwrap_or_default().with(count));
            }
        };
        let committed = Committed {
            decoded,
            outcomes,
            insert_time,
        };
        // Settled above: starts at once.
        self.acks
            .start(move |mut acker| async move {
                let result = acker.finish(committed).await;
                (acker, result)
            })
            .await
    }

    /// Logs a transient failure, keeps the held entries (and those read ahead) from being
    /// claimed, and waits before the next attempt. Returns `Err` once shutdown was requested
    /// and the drain time is spent.
    async fn pause(
        &mut self,
        backoff: &mut Backoff,
        step: &str,
        error: &str,
        held: &[String],
    ) -> Result<(), Abandoned> {
        let mut held = held.to_vec();
        held.extend(
            self.ahead
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .cloned(),
        );
        self.holder.pause(backoff, (step, error), &held).await
    }

    /// The batch insert, retried while it fails (see [`batch::insert`]).
    async fn insert(
        &mut self,
        orders: &[order_store::NewOrder],
        held: &[String],
    ) -> Result<Vec<Outcome>, Abandoned> {
        let mut backoff = Backoff::standard();
        loop {
            let drain = self.holder.stop.drain_timer();
            let attempt = tokio::select! {
                result = batch::insert(&self.pool, orders, self.timeout) => result,
                // A hanging insert must not hold the process past its grace period; cut
                // off, it commits or not, and the redelivered entries find out which.
                () = drain => return Err(Abandoned::default()),
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

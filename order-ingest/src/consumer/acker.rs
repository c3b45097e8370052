//! The acknowledgement stage: a committed batch's dead letters, then its `XACK`, retried
//! while Redis is unavailable; it runs while the next batch is inserted.

use std::time::Duration;

use tracing::Instrument as _;

use super::reader::Decoded;
use super::stage::Holder;
use super::Abandoned;
use crate::batch::Outcome;
use crate::dlq::DeadLetter;
use crate::retry::Backoff;

/// A batch whose insert committed: what is left is its dead letters and acknowledgement.
pub(super) struct Committed {
    pub(super) decoded: Decoded,
    pub(super) outcomes: Vec<Outcome>,
    pub(super) insert_time: Duration,
}

/// Dead letters and acknowledgement of committed batches, on a Redis command connection of
/// its own.
pub(super) struct Acker {
    dlq_key: String,
    holder: Holder,
}

impl Acker {
    pub(super) fn new(dlq_key: String, holder: Holder) -> Self {
        Self { dlq_key, holder }
    }

    /// Dead letters and acknowledgement of one committed batch, in the batch's span. `Err`
    /// counting the batch's entries when the drain time ran out.
    pub(super) async fn finish(&mut self, committed: Committed) -> Result<(), Abandoned> {
        let span = committed.decoded.span.clone();
        let count = committed.decoded.entries.len();
        let result = self.finish_in(committed).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result.map_err(|abandoned| abandoned.with(count))
    }

    async fn finish_in(&mut self, committed: Committed) -> Result<(), Abandoned> {
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
            self.holder.metrics.add_dead_letter(letter.class);
            letter.log("dead-lettered entry");
        }
        self.ack(&ids).await?;
        self.holder.metrics.add_inserted(done.tally.inserted);
        self.holder
            .metrics
            .add_already_present(done.tally.already_present);
        self.holder.metrics.add_skipped(done.skipped);
        self.holder.metrics.set_degraded(false);
        self.holder.metrics.observe_batch(started.elapsed());
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

    /// Writes the batch's dead letters, before their entries are acknowledged. The two are
    /// separate commands (the dead-letter stream and the stream may live on different nodes of
    /// a cluster), so a worker killed between them leaves the entry pending, and whoever claims
    /// it writes its dead letter a second time: dead letters are at least once, never lost.
    async fn dead_letter(&mut self, dead: &[DeadLetter], held: &[String]) -> Result<(), Abandoned> {
        if dead.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for letter in dead {
            letter.add_to(&mut pipe, &self.dlq_key);
        }
        let mut backoff = Backoff::standard();
        while let Err(e) = self.holder.group.writer().pipe::<redis::Value>(&pipe).await {
            let error = e.to_string();
            self.holder
                .pause(&mut backoff, ("dead-letter", &error), held)
                .await?;
        }
        Ok(())
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), Abandoned> {
        let mut backoff = Backoff::standard();
        while let Err(e) = self.holder.group.ack(ids).await {
            let error = e.to_string();
            self.holder
                .pause(&mut backoff, ("ack", &error), ids)
                .await?;
        }
        Ok(())
    }
}

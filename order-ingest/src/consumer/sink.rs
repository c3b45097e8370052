//! The write side of the pipeline: the insert of one decoded batch (the sink) and the dead
//! letters and acknowledgement of a committed one (the acker).

use super::*;

impl Sink {
    /// Inserts one decoded batch in its span, then hands it to the acker once the previous
    /// batch is acknowledged: its dead letters and acknowledgement run while the next batch
    /// is inserted. `Err` with the number of entries left pending when the drain time ran out.
    pub(super) async fn finish(&mut self, decoded: Decoded) -> Result<(), usize> {
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
        let committed = Committed {
            decoded,
            outcomes,
            insert_time,
        };
        // Settled above: starts at once.
        self.acks
            .start(move |mut acker| async move {
                let result = acker.finish(committed).await.map_err(|Abandon| count);
                (acker, result)
            })
            .await
    }

    /// Logs a transient failure, keeps the held entries from being claimed, and waits before
    /// the next attempt. Returns `Err` once shutdown was requested and the drain time is spent.
    pub(super) async fn pause(
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
        pause_holding(
            &self.metrics,
            &mut self.group,
            &self.stop,
            backoff,
            (step, error),
            &held,
        )
        .await
    }

    /// The batch insert, retried while it fails (see [`batch::insert`]).
    pub(super) async fn insert(
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
    pub(super) async fn finish(&mut self, committed: Committed) -> Result<(), Abandon> {
        let span = committed.decoded.span.clone();
        let result = self.finish_in(committed).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    pub(super) async fn finish_in(&mut self, committed: Committed) -> Result<(), Abandon> {
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
    pub(super) async fn pause(
        &mut self,
        backoff: &mut Backoff,
        step: &str,
        error: &str,
        held: &[String],
    ) -> Result<(), Abandon> {
        pause_holding(
            &self.metrics,
            &mut self.group,
            &self.stop,
            backoff,
            (step, error),
            held,
        )
        .await
    }

    pub(super) async fn dead_letter(
        &mut self,
        dead: &[DeadLetter],
        held: &[String],
    ) -> Result<(), Abandon> {
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

    pub(super) async fn ack(&mut self, ids: &[String]) -> Result<(), Abandon> {
        let mut backoff = Backoff::standard();
        while let Err(e) = self.group.ack(ids).await {
            self.pause(&mut backoff, "ack", &e.to_string(), ids).await?;
        }
        Ok(())
    }
}

/// What the sink and the acker do after a transient failure of `failed_step`: count and log it, keep
/// the `held` entries from being claimed by another consumer, and wait before the next attempt.
/// `Err` once shutdown was requested and the drain time is spent.
async fn pause_holding(
    metrics: &Metrics,
    group: &mut Group,
    stop: &Stop,
    backoff: &mut Backoff,
    (failed_step, error): (&str, &str),
    held: &[String],
) -> Result<(), Abandon> {
    let delay = note_failure(metrics, backoff, failed_step, error, held.len());
    if !held.is_empty() {
        group.refresh_idle(held).await;
    }
    stop.wait(delay).await
}

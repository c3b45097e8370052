//! What the stages share: a [`Stage`] that runs one job at a time in a task of its own, the
//! shutdown request every stage watches ([`Stop`]), and what a stage does after a transient
//! failure ([`note_failure`], [`Holder`]).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Abandoned;
use crate::group::Group;
use crate::metrics::Metrics;
use crate::retry::{Backoff, DRAIN_LIMIT};

/// A worker (the sink, the acker), idle or busy with one job in a task of its own, which gives
/// the worker back with the job's result.
pub(super) enum Stage<W> {
    Idle(Box<W>),
    Busy(tokio::task::JoinHandle<(Box<W>, Result<(), Abandoned>)>),
    /// Only while switching between the two.
    Empty,
}

impl<W: Send + 'static> Stage<W> {
    pub(super) fn idle(worker: W) -> Self {
        Stage::Idle(Box::new(worker))
    }

    /// Runs `job` on the worker in a task, once the job in flight (if any) has finished; `Err`
    /// if that one was abandoned (`job` then never starts).
    pub(super) async fn start<F>(&mut self, job: impl FnOnce(Box<W>) -> F) -> Result<(), Abandoned>
    where
        F: Future<Output = (Box<W>, Result<(), Abandoned>)> + Send + 'static,
    {
        self.settle().await?;
        if let Stage::Idle(worker) = std::mem::replace(self, Stage::Empty) {
            *self = Stage::Busy(tokio::spawn(job(worker)));
        }
        Ok(())
    }

    /// Waits for the job in flight, if any; `Err` if it was abandoned. A job that panicked
    /// panics here.
    pub(super) async fn settle(&mut self) -> Result<(), Abandoned> {
        match std::mem::replace(self, Stage::Empty) {
            Stage::Busy(task) => match task.await {
                Ok((worker, result)) => {
                    *self = Stage::Idle(worker);
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

    /// The worker, when no job is in flight.
    pub(super) fn idle_mut(&mut self) -> Option<&mut W> {
        match self {
            Stage::Idle(worker) => Some(worker),
            _ => None,
        }
    }

    /// The worker, when no job is in flight.
    pub(super) fn into_idle(self) -> Option<Box<W>> {
        match self {
            Stage::Idle(worker) => Some(worker),
            _ => None,
        }
    }
}

/// The shutdown request and when it was first seen, shared by every stage.
#[derive(Clone)]
pub(super) struct Stop {
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) seen: Arc<OnceLock<Instant>>,
}

impl Stop {
    pub(super) fn stopping(&self) -> bool {
        let stop = *self.shutdown.borrow() || self.shutdown.has_changed().is_err();
        if stop {
            self.seen.get_or_init(Instant::now);
        }
        stop
    }

    pub(super) fn seen(&self) -> Option<Instant> {
        self.seen.get().copied()
    }

    pub(super) fn drain_expired(&self) -> bool {
        self.stopping() && self.seen().is_some_and(|t| t.elapsed() >= DRAIN_LIMIT)
    }

    /// Completes when the drain time after a shutdown request is spent.
    pub(super) fn drain_timer(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
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
    /// requested and the drain time is spent (the caller counts the entries it held).
    pub(super) async fn wait(&self, delay: Duration) -> Result<(), Abandoned> {
        if self.drain_expired() {
            return Err(Abandoned::default());
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
            return Err(Abandoned::default());
        }
        Ok(())
    }
}

/// Counts and logs a transient failure; returns how long to wait before the next attempt.
pub(super) fn note_failure(
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

/// What a stage that holds entries (the sink, the acker) needs after a transient failure: the
/// group, to keep the held entries from being claimed by another consumer while it waits, the
/// metrics that count the failure, and the shutdown request that cuts the wait short.
pub(super) struct Holder {
    pub(super) group: Group,
    pub(super) metrics: Arc<Metrics>,
    pub(super) stop: Stop,
}

impl Holder {
    /// Counts and logs a transient failure of `failed_step`, refreshes the idle time of the
    /// `held` entries, and waits before the next attempt. `Err` once shutdown was requested
    /// and the drain time is spent.
    pub(super) async fn pause(
        &mut self,
        backoff: &mut Backoff,
        (failed_step, error): (&str, &str),
        held: &[String],
    ) -> Result<(), Abandoned> {
        let delay = note_failure(&self.metrics, backoff, failed_step, error, held.len());
        if !held.is_empty() {
            self.group.refresh_idle(held).await;
        }
        self.stop.wait(delay).await
    }
}

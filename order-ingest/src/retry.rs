//! The one retry policy of ingest and the deadlines that are not configurable.
//!
//! Failures that go away by themselves (a database or Redis outage, a timeout, an exhausted
//! pool) are retried with capped exponential backoff and jitter. The live consumer retries
//! without limit (it holds entries nobody else may take); replay and backfill, which an
//! operator is waiting on, give up after [`ATTEMPTS`] and say where to resume.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};

/// Attempts of one step before replay or backfill gives up on a dependency.
pub const ATTEMPTS: usize = 12;
/// Deadline of one non-blocking Redis command (XACK, XADD, XAUTOCLAIM, XPENDING, XRANGE).
pub const REDIS_COMMAND: Duration = Duration::from_secs(5);
/// A blocking read waits this much longer than its `BLOCK` before the connection is given up:
/// a shorter client deadline would abandon reads the server already delivered entries to.
pub const READ_MARGIN: Duration = Duration::from_secs(2);
/// After SIGTERM, how long the batch in flight may keep retrying before it is left pending
/// for another consumer: well inside Kubernetes' default 30 s grace period.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(20);

/// `work` bounded by `timeout`: past it, the operation is reported as the database being
/// unavailable (transient), like a lost connection.
pub async fn within<T>(
    timeout: Duration,
    what: &str,
    work: impl std::future::Future<Output = Result<T, order_store::StoreError>>,
) -> Result<T, order_store::StoreError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(order_store::StoreError::Unavailable(format!(
                "{what} did not finish within {timeout:?}"
            )))
        })
}

/// Delays of `base × 2^n`, capped, each drawn uniformly from its upper half so that pods that
/// lost a dependency together do not all come back in the same instant. backon (already in the
/// tree through redis) draws them: its jitter adds up to one more delay, so it is given half
/// of `base` and `cap`.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(base / 2)
            .with_max_delay(cap / 2)
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            delays: builder.build(),
            attempt: 0,
        }
    }

    /// 100 ms doubling up to 5 s: a recovered database is used again within seconds.
    pub fn standard() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.delays = self.builder.build();
        self.attempt = 0;
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.delays.next().unwrap_or(Duration::from_secs(5))
    }
}

/// Runs `work` until it succeeds, fails permanently, or has failed transiently [`ATTEMPTS`]
/// times, waiting with [`Backoff::standard`] in between; the last error is returned.
/// `who` and `step` name the attempt in the warning logged before each retry.
pub async fn bounded<T, E: std::fmt::Display>(
    who: &str,
    step: &str,
    is_transient: impl Fn(&E) -> bool,
    mut work: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut backoff = Backoff::standard();
    loop {
        match work().await {
            Ok(value) => return Ok(value),
            Err(e) if is_transient(&e) && (backoff.attempts() as usize) + 1 < ATTEMPTS => {
                let delay = backoff.next_delay();
                tracing::warn!(step, error = %e, retry_in_ms = delay.as_millis() as u64, "{who}: transient failure; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..30 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(1));
        }
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

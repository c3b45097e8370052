//! Capped exponential backoff with jitter, for failures that go away by themselves.

use std::time::Duration;

/// Delays of `base × 2^n`, capped, each drawn uniformly from its upper half so that pods that
/// lost a dependency together do not all come back in the same instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// 100 ms doubling up to 5 s: a recovered database is used again within seconds.
    pub const fn standard() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(self.attempt.min(20)))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(random_below(jitter_ms.saturating_add(1)))
    }
}

/// A random number below `bound` (`bound` > 0). A v4 UUID is 122 random bits from the OS; this
/// avoids adding a random-number crate for jitter.
fn random_below(bound: u64) -> u64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64;
    bits % bound.max(1)
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

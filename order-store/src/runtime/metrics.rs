//! The Prometheus series both binaries export the same way: the build, and the database pool's
//! checkout waits. Each binary keeps its own [`Registry`] (never the crate's global one) and
//! registers these into it.

use prometheus::core::Collector;
use prometheus::{Counter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::Pool;

/// `metric` registered in `registry`. Names, labels and buckets are constants, each registered
/// once per registry, so neither step can fail at run time; a mistake fails every test.
#[allow(clippy::expect_used)]
pub fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<C>,
) -> C {
    let metric = metric.expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

/// `order_service_build_info{version,git_sha} 1`, the same series in both binaries. `git_sha`
/// is the `GIT_SHA` environment variable at compile time (the Dockerfile's build argument),
/// `unknown` when it is unset or empty.
pub fn register_build_info(registry: &Registry, version: &str) {
    let info = register(
        registry,
        IntGaugeVec::new(
            Opts::new(
                "order_service_build_info",
                "Always 1; the labels name the running build.",
            ),
            &["version", "git_sha"],
        ),
    );
    info.with_label_values(&[
        version,
        option_env!("GIT_SHA")
            .filter(|sha| !sha.is_empty())
            .unwrap_or("unknown"),
    ])
    .set(1);
}

/// bb8's cumulative checkout statistics as counters (`db_pool_wait_seconds_total`,
/// `db_pool_gets_total{outcome}`).
#[derive(Debug)]
pub struct PoolWaits {
    wait_seconds: Counter,
    gets: IntCounterVec,
}

impl PoolWaits {
    pub fn register(registry: &Registry) -> Self {
        let gets = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "db_pool_gets_total",
                    "Connection checkouts from the pool: direct (a connection was free), waited, timed_out.",
                ),
                &["outcome"],
            ),
        );
        for outcome in ["direct", "waited", "timed_out"] {
            gets.with_label_values(&[outcome]);
        }
        Self {
            wait_seconds: register(
                registry,
                Counter::new(
                    "db_pool_wait_seconds_total",
                    "Time checkouts spent waiting for a pool connection.",
                ),
            ),
            gets,
        }
    }

    /// Sets the counters to bb8's totals. bb8 keeps the running totals itself, so each counter
    /// is reset and raised to the total; callers hold their scrape lock across this and the
    /// gathering, so no scrape ever sees the intermediate 0.
    pub fn set(&self, pool: &Pool) {
        let stats = pool.state().statistics;
        self.wait_seconds.reset();
        self.wait_seconds.inc_by(stats.get_wait_time.as_secs_f64());
        for (outcome, total) in [
            ("direct", stats.get_direct),
            ("waited", stats.get_waited),
            ("timed_out", stats.get_timed_out),
        ] {
            let counter = self.gets.with_label_values(&[outcome]);
            counter.reset();
            counter.inc_by(total);
        }
    }
}

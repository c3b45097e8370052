//! The read replica: a streaming-replication standby that serves reads while it is up and
//! current, watched by a background monitor, and the consistency token that lets a client read
//! its own changes from it.
//!
//! The monitor asks the standby every [`MONITOR_INTERVAL`] how far it has received and replayed
//! the primary's WAL and when it last replayed a transaction ([`replication::standby_status`]).
//! It keeps the replayed position, the lag and whether the standby answers; reads consult these
//! cached values, so a read never waits on a standby that has gone away: after a failure the
//! standby is marked down and only the monitor keeps trying it until it answers again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use order_store::replication::{self, StandbyStatus};
use order_store::{Pool, StoreError};
use prometheus::{Gauge, IntGauge};
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::shared_reads::SharedReads;

/// How often the monitor asks the standby for its positions.
pub const MONITOR_INTERVAL: Duration = Duration::from_millis(250);
/// How long one probe of the standby may take before it counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The request and response header carrying a consistency token.
pub const CONSISTENCY_HEADER: &str = "x-consistency-token";

/// Lag value while it cannot be told (WAL is pending and no transaction has been replayed
/// since the standby started): reads treat it as too far behind; the gauge shows +Inf.
const UNKNOWN_LAG: u64 = u64::MAX;

/// Where a read went and why: the `target` and `reason` labels of `order_api_db_reads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRoute {
    /// On the replica, which is up and within the maximum lag.
    ReplicaCurrent,
    /// On the replica, which has also replayed past the request's consistency token.
    ReplicaTokenReplayed,
    /// On the primary: no read replica is configured.
    NoReplica,
    /// On the primary: the replica is down.
    ReplicaDown,
    /// On the primary: the replica lags more than the maximum.
    ReplicaLagging,
    /// On the primary: the replica has not yet replayed the request's consistency token.
    TokenAhead,
    /// On the primary: the read belongs to a GraphQL document that holds a mutation.
    Mutation,
    /// On the primary, retried: the replica cancelled the read for a recovery conflict.
    RecoveryConflict,
    /// On the primary, retried: the replica failed (it is marked down).
    ReplicaFailed,
}

impl ReadRoute {
    pub const ALL: [ReadRoute; 9] = [
        ReadRoute::ReplicaCurrent,
        ReadRoute::ReplicaTokenReplayed,
        ReadRoute::NoReplica,
        ReadRoute::ReplicaDown,
        ReadRoute::ReplicaLagging,
        ReadRoute::TokenAhead,
        ReadRoute::Mutation,
        ReadRoute::RecoveryConflict,
        ReadRoute::ReplicaFailed,
    ];

    pub fn target(self) -> &'static str {
        match self {
            ReadRoute::ReplicaCurrent | ReadRoute::ReplicaTokenReplayed => "replica",
            _ => "primary",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            ReadRoute::ReplicaCurrent => "current",
            ReadRoute::ReplicaTokenReplayed => "token_replayed",
            ReadRoute::NoReplica => "no_replica",
            ReadRoute::ReplicaDown => "replica_down",
            ReadRoute::ReplicaLagging => "replica_lagging",
            ReadRoute::TokenAhead => "token_ahead",
            ReadRoute::Mutation => "mutation",
            ReadRoute::RecoveryConflict => "recovery_conflict",
            ReadRoute::ReplicaFailed => "replica_failed",
        }
    }
}

/// The gauges the monitor keeps current.
#[derive(Clone)]
pub struct ReplicaGauges {
    pub up: IntGauge,
    pub lag_seconds: Gauge,
}

/// A read replica and what the monitor last learnt about it.
pub struct ReadReplica {
    pool: Pool,
    /// The pool's connections shared by single-statement reads, if any.
    shared: Option<SharedReads>,
    max_lag_ms: u64,
    up: AtomicBool,
    replayed: AtomicU64,
    lag_ms: AtomicU64,
    gauges: ReplicaGauges,
    /// Whether the state has been logged once: a replica that is down from the start is
    /// reported at its first probe, later only the up/down transitions are.
    announced: AtomicBool,
    /// Wakes the monitor early after a read failed, so that a replica whose pooled connections
    /// were cut by a restart (each failing once) is back in use as soon as it answers.
    probe_now: Notify,
}

impl ReadReplica {
    /// The replica behind `pool`, marked down until the monitor started here (on `probe_pool`,
    /// a pool of its own so that busy reads never delay a probe) has heard from it. The monitor
    /// stops once the returned handle and its clones are dropped. `shared_reads` of the
    /// pool's connections are shared by single-statement reads ([`SharedReads`]).
    pub fn start(
        pool: Pool,
        shared_reads: u32,
        probe_pool: Pool,
        max_lag: Duration,
        gauges: ReplicaGauges,
    ) -> Arc<Self> {
        gauges.up.set(0);
        let replica = Arc::new(Self {
            shared: SharedReads::new(pool.clone(), shared_reads),
            pool,
            max_lag_ms: max_lag.as_millis() as u64,
            up: AtomicBool::new(false),
            replayed: AtomicU64::new(0),
            lag_ms: AtomicU64::new(UNKNOWN_LAG),
            gauges,
            announced: AtomicBool::new(false),
            probe_now: Notify::new(),
        });
        tokio::spawn(monitor(Arc::downgrade(&replica), probe_pool));
        replica
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn shared_reads(&self) -> Option<&SharedReads> {
        self.shared.as_ref()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Where a read goes: the replica when it is up, within the maximum lag and (with a
    /// consistency token) replayed at least up to the token; the primary otherwise, with why.
    pub fn route(&self, after: Option<u64>) -> ReadRoute {
        if !self.is_up() {
            return ReadRoute::ReplicaDown;
        }
        if self.lag_ms.load(Ordering::Acquire) > self.max_lag_ms {
            return ReadRoute::ReplicaLagging;
        }
        match after {
            None => ReadRoute::ReplicaCurrent,
            Some(token) if self.replayed.load(Ordering::Acquire) >= token => {
                ReadRoute::ReplicaTokenReplayed
            }
            Some(_) => ReadRoute::TokenAhead,
        }
    }

    /// After a read failed on the replica: reads go to the primary until the monitor, woken
    /// at once, hears from the replica again.
    pub fn mark_down(&self, error: &StoreError) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %error, "read replica failed; reads go to the primary until it answers again");
        }
        self.gauges.up.set(0);
        self.probe_now.notify_one();
    }

    /// Takes in one probe's outcome.
    fn record(&self, outcome: Result<StandbyStatus, String>) {
        let status = match outcome {
            Ok(status) if status.in_recovery => status,
            Ok(_) => {
                self.set_down("the read database is not a standby (pg_is_in_recovery() is false)");
                return;
            }
            Err(e) => {
                self.set_down(&e);
                return;
            }
        };
        let lag = status.lag_ms().unwrap_or(UNKNOWN_LAG);
        self.lag_ms.store(lag, Ordering::Release);
        if let Some(replayed) = status.replayed {
            self.replayed.store(replayed, Ordering::Release);
        }
        self.gauges.lag_seconds.set(if lag == UNKNOWN_LAG {
            f64::INFINITY
        } else {
            lag as f64 / 1000.0
        });
        self.announced.store(true, Ordering::Release);
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!(
                lag_ms = lag,
                "read replica answers; reads go to it while it is current"
            );
        }
        self.gauges.up.set(1);
    }

    fn set_down(&self, reason: &str) {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        if was_up || !self.announced.swap(true, Ordering::AcqRel) {
            tracing::warn!(reason, "read replica down; reads go to the primary");
        }
        self.gauges.up.set(0);
    }
}

/// Probes the replica every [`MONITOR_INTERVAL`] while it is still in use.
async fn monitor(replica: Weak<ReadReplica>, probe_pool: Pool) {
    loop {
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, async {
            let mut conn = probe_pool.get().await?;
            replication::standby_status(&mut conn).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no answer within {} ms",
                PROBE_TIMEOUT.as_millis()
            )))
        })
        .map_err(|e| e.to_string());
        let Some(replica) = replica.upgrade() else {
            return;
        };
        replica.record(outcome);
        let woken = async {
            tokio::select! {
                () = replica.probe_now.notified() => {}
                () = tokio::time::sleep(MONITOR_INTERVAL) => {}
            }
        };
        woken.await;
        drop(replica);
    }
}

/// The consistency token answered after a change: the primary's WAL position after the commit.
pub fn format_token(position: u64) -> String {
    replication::format_lsn(position)
}

/// A consistency token sent back by a client, or a 400 naming the header.
pub fn parse_token(text: &str) -> Result<u64, ApiError> {
    replication::parse_lsn(text.trim()).ok_or(ApiError::MalformedConsistencyToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_own_counter_slot() {
        for (index, route) in ReadRoute::ALL.iter().enumerate() {
            assert_eq!(*route as usize, index, "{route:?}");
        }
        let labels: std::collections::HashSet<_> = ReadRoute::ALL
            .iter()
            .map(|r| (r.target(), r.reason()))
            .collect();
        assert_eq!(labels.len(), ReadRoute::ALL.len());
    }

    #[test]
    fn tokens_round_trip_and_anything_else_is_a_400() {
        let token = format_token(0x16_B374_D848);
        assert_eq!(token, "16/B374D848");
        assert_eq!(parse_token(&token).ok(), Some(0x16_B374_D848));
        for bad in ["", "nope", "16/", "16/B374D848/1", "-1/0"] {
            let error = parse_token(bad).err().map(|e| e.status().as_u16());
            assert_eq!(error, Some(400), "{bad:?}");
        }
    }
}

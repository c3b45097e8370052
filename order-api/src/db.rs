//! Database access for the service layer: every checkout and query bounded in time, so that a
//! silent database turns into a 503 instead of a request that hangs; reads routed to the read
//! replica ([`crate::replica`]) when it can serve them, everything else on the primary.
//!
//! A [`Db`] is made per request from the shared one: [`Db::for_reads`] with the client's
//! consistency token, or [`Db::for_changes`] for a change (and every operation of a GraphQL
//! document holding a mutation), which records where the primary's WAL stood after each
//! successful change so that the response can carry it as the next read's token.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use order_store::{replication, AsyncPgConnection, Pool, StoreError};
use prometheus::IntCounter;
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::replica::{self, ReadReplica, ReadRoute};
use crate::shared_reads::SharedReads;

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    op_timeout: Duration,
    /// The primary's connections shared by single-statement reads, if it has any.
    shared: Option<Arc<SharedReads>>,
    replica: Option<Arc<ReadReplica>>,
    reads: Arc<ReadCounters>,
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    /// Reads may go to the replica; `after` is the client's consistency token.
    Reads { after: Option<u64> },
    /// Everything on the primary; `written` is the highest WAL position after a change made
    /// through this value (0: none yet).
    Changes { written: Arc<AtomicU64> },
}

/// `order_api_db_reads_total`, one counter per [`ReadRoute`] (resolved once, not per read).
pub struct ReadCounters([IntCounter; ReadRoute::ALL.len()]);

impl ReadCounters {
    pub fn new(family: &prometheus::IntCounterVec) -> Self {
        Self(
            ReadRoute::ALL.map(|route| family.with_label_values(&[route.target(), route.reason()])),
        )
    }

    fn count(&self, route: ReadRoute) {
        self.0[route as usize].inc();
    }
}

impl Db {
    /// `shared_reads`: how many of the primary's pooled connections single-statement reads
    /// share ([`SharedReads`]; 0 for none).
    pub fn new(
        pool: Pool,
        shared_reads: u32,
        op_timeout: Duration,
        replica: Option<Arc<ReadReplica>>,
        reads: ReadCounters,
    ) -> Self {
        Self {
            shared: SharedReads::new(pool.clone(), shared_reads).map(Arc::new),
            pool,
            op_timeout,
            replica,
            reads: Arc::new(reads),
            mode: Mode::Reads { after: None },
        }
    }

    /// The primary's pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// This database for one request's reads; `after` is its consistency token.
    #[must_use]
    pub fn for_reads(&self, after: Option<u64>) -> Self {
        Self {
            mode: Mode::Reads { after },
            ..self.clone()
        }
    }

    /// This database for one request that changes data: everything on the primary.
    #[must_use]
    pub fn for_changes(&self) -> Self {
        Self {
            mode: Mode::Changes {
                written: Arc::default(),
            },
            ..self.clone()
        }
    }

    /// The token to answer after the changes made through this value, if any succeeded.
    pub fn consistency_token(&self) -> Option<String> {
        match &self.mode {
            Mode::Changes { written } => match written.load(Ordering::Acquire) {
                0 => None,
                position => Some(replica::format_token(position)),
            },
            Mode::Reads { .. } => None,
        }
    }

    /// A change: `op` on the primary, then (on success) the primary's WAL position, on the
    /// same connection, kept for [`Db::consistency_token`].
    pub async fn write<T>(
        &self,
        statement: &'static str,
        op: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, StoreError>,
    ) -> Result<T, ApiError> {
        let written = match &self.mode {
            Mode::Changes { written } => Some(written.clone()),
            Mode::Reads { .. } => None,
        };
        self.run(&self.pool, statement, async |conn| {
            let value = op(conn).await?;
            if let Some(written) = written {
                // The change has committed, so it is answered as a success whatever happens
                // now: a 503 would invite a retry that applies it twice. Without the primary's
                // position the token is the highest there is, which keeps the client's reads
                // on the primary (where the change is) until its next change answers a real one.
                let position = match replication::wal_insert_position(conn).await {
                    Ok(position) => position,
                    Err(error) => {
                        tracing::warn!(%error, "no WAL position after a committed change; its token sends reads to the primary");
                        u64::MAX
                    }
                };
                written.fetch_max(position, Ordering::AcqRel);
            }
            Ok(value)
        })
        .await
    }

    /// A read: on the replica when [`ReadReplica::route`] says so, else on the primary. A read
    /// the replica fails is run once more on the primary: after a recovery conflict as is,
    /// after any other failure with the replica marked down.
    pub async fn read<T>(
        &self,
        statement: &'static str,
        op: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, StoreError> + Clone,
    ) -> Result<T, ApiError> {
        let (route, Some(replica)) = self.route_read() else {
            return self.run(&self.pool, statement, op).await;
        };
        match self.attempt(replica.pool(), statement, op.clone()).await {
            Ok(value) => {
                self.reads.count(route);
                Ok(value)
            }
            Err(e) => {
                self.replica_failed(replica, &e);
                self.run(&self.pool, statement, op).await
            }
        }
    }

    /// A read of one statement, which needs no connection of its own: it runs on one of the
    /// connections such reads share ([`SharedReads`]) where the pool has them, and is routed
    /// as [`Db::read`] routes.
    pub async fn read_statement<T>(
        &self,
        statement: &'static str,
        op: impl AsyncFnOnce(&AsyncPgConnection) -> Result<T, StoreError> + Clone,
    ) -> Result<T, ApiError> {
        let primary = self.shared.as_deref();
        let (route, Some(replica)) = self.route_read() else {
            return self
                .attempt_statement(&self.pool, primary, statement, op)
                .await
                .map_err(ApiError::from);
        };
        let on_replica = self
            .attempt_statement(
                replica.pool(),
                replica.shared_reads(),
                statement,
                op.clone(),
            )
            .await;
        match on_replica {
            Ok(value) => {
                self.reads.count(route);
                Ok(value)
            }
            Err(e) => {
                self.replica_failed(replica, &e);
                self.attempt_statement(&self.pool, primary, statement, op)
                    .await
                    .map_err(ApiError::from)
            }
        }
    }

    /// Where this read goes, and the replica when it goes there. A read on the primary is
    /// counted here; one on the replica once it succeeds ([`Db::replica_failed`] counts the
    /// retry of one that failed).
    fn route_read(&self) -> (ReadRoute, Option<&ReadReplica>) {
        let route = match (&self.mode, &self.replica) {
            (Mode::Changes { .. }, _) => ReadRoute::Mutation,
            (Mode::Reads { .. }, None) => ReadRoute::NoReplica,
            (Mode::Reads { after }, Some(replica)) => replica.route(*after),
        };
        let replica = self
            .replica
            .as_deref()
            .filter(|_| route.target() == "replica");
        if replica.is_none() {
            self.reads.count(route);
        }
        (route, replica)
    }

    /// Records that the replica failed a read about to be retried on the primary.
    fn replica_failed(&self, replica: &ReadReplica, error: &StoreError) {
        let retry = if replication::is_recovery_conflict(error) {
            ReadRoute::RecoveryConflict
        } else {
            replica.mark_down(error);
            ReadRoute::ReplicaFailed
        };
        tracing::debug!(%error, reason = retry.reason(), "read retried on the primary");
        self.reads.count(retry);
    }

    /// `op` on a connection of `shared` when given, else on one of its own from `pool`.
    async fn attempt_statement<T>(
        &self,
        pool: &Pool,
        shared: Option<&SharedReads>,
        statement: &'static str,
        op: impl AsyncFnOnce(&AsyncPgConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match shared {
            Some(shared) => self.attempt_shared(shared, statement, op).await,
            None => {
                self.attempt(pool, statement, async |conn| op(conn).await)
                    .await
            }
        }
    }

    /// `op` on a shared connection of `shared`; a failed statement retires that connection.
    async fn attempt_shared<T>(
        &self,
        shared: &SharedReads,
        statement: &'static str,
        op: impl AsyncFnOnce(&AsyncPgConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.observed(statement, async {
            let conn = shared.connection().await?;
            let result = op(conn.get()).await;
            if result.is_err() {
                conn.retire();
            }
            result
        })
        .await
    }

    /// `op` on one connection of `pool`, with the error as the store reported it.
    async fn attempt<T>(
        &self,
        pool: &Pool,
        statement: &'static str,
        op: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.observed(statement, async {
            let mut conn = pool.get_owned().await?;
            op(&mut conn).await
        })
        .await
    }

    /// `operation` within the operation timeout, in its database span.
    async fn observed<T>(
        &self,
        statement: &'static str,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let span = order_store::runtime::telemetry::db_span(statement, None);
        let result = self.timed(operation).instrument(span.clone()).await;
        if let Err(e) = &result {
            span.record("otel.status_code", "ERROR");
            span.in_scope(|| tracing::debug!(error = %e, "database call failed"));
        }
        result
    }

    /// `op` on one pooled connection; checkout and `op` together take at most the operation
    /// timeout, past which the result is `Unavailable`. `statement` is the SQL operation `op`
    /// runs (`SELECT`, `UPDATE`): it names the database span (OpenTelemetry's database
    /// conventions), which carries the operation and never the statement's parameters.
    async fn run<T>(
        &self,
        pool: &Pool,
        statement: &'static str,
        op: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, StoreError>,
    ) -> Result<T, ApiError> {
        self.attempt(pool, statement, op)
            .await
            .map_err(ApiError::from)
    }

    /// `operation`, or `Unavailable` once the operation timeout has passed.
    async fn timed<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.op_timeout, operation)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "database operation exceeded {} ms",
                    self.op_timeout.as_millis()
                )))
            })
    }
}

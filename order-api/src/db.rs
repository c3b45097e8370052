//! Database access for the service layer: every checkout and query bounded in time, so that a
//! silent database (FIELD-NOTES 2) turns into a 503 instead of a request that hangs.

use std::future::Future;
use std::time::Duration;

use order_store::{AsyncPgConnection, Pool, StoreError};
use tracing::Instrument as _;

use crate::error::ApiError;

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    op_timeout: Duration,
}

impl Db {
    pub fn new(pool: Pool, op_timeout: Duration) -> Self {
        Self { pool, op_timeout }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `op` on one pooled connection; checkout and `op` together take at most the operation
    /// timeout, past which the result is `Unavailable`. `statement` is the SQL operation `op`
    /// runs (`SELECT`, `UPDATE`): it names the database span (OpenTelemetry's database
    /// conventions), which carries the operation and never the statement's parameters.
    pub async fn run<T>(
        &self,
        statement: &'static str,
        op: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, StoreError>,
    ) -> Result<T, ApiError> {
        let span = order_store::telemetry::db_span(statement, None);
        let result = self
            .timed(async {
                let mut conn = self.pool.get_owned().await?;
                op(&mut conn).await
            })
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            span.record("otel.status_code", "ERROR");
            span.in_scope(|| tracing::debug!(error = %e, "database call failed"));
        }
        result.map_err(ApiError::from)
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

//! Database access for handlers: every checkout and query bounded in time, so that a silent
//! database (FIELD-NOTES 2) turns into a 503 instead of a request that hangs.

use std::future::Future;
use std::time::Duration;

use order_store::{Pool, PooledConn, StoreError};

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

    /// A pooled connection; the pool's own connection timeout bounds the wait.
    pub async fn conn(&self) -> Result<PooledConn, StoreError> {
        self.timed(async { Ok(self.pool.get_owned().await?) }).await
    }

    /// `operation`, or `Unavailable` once the operation timeout has passed.
    pub async fn timed<T>(
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

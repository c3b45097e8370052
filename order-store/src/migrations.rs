//! Embedded migrations: the same `migrations/` directory that `diesel migration run` applies.

use diesel::RunQueryDsl as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::StoreError;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Key of the session-level advisory lock that serialises migration runs across pods.
/// Derived from the name so that it does not collide with other applications' keys.
const MIGRATION_LOCK_KEY: i64 = 0x6f72_6465_7273_6462; // "ordersdb"

type SyncConnection = AsyncConnectionWrapper<AsyncPgConnection>;

/// Runs `work` on a synchronous wrapper connection on a blocking thread, as diesel's
/// migration harness is synchronous.
async fn with_sync_connection<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(&mut SyncConnection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn: SyncConnection = diesel::Connection::establish(&url)?;
        work(&mut conn)
    })
    .await
    .map_err(|e| StoreError::Other(Box::new(e)))?
}

/// Names of the migrations not yet applied.
pub async fn pending(url: &str) -> Result<Vec<String>, StoreError> {
    with_sync_connection(url, |conn| {
        let pending = conn
            .pending_migrations(MIGRATIONS)
            .map_err(StoreError::Other)?;
        Ok(pending.iter().map(|m| m.name().to_string()).collect())
    })
    .await
}

/// Applies every pending migration while holding an advisory lock, returning their names.
/// A pod that waits on the lock finds nothing left to do once it gets it.
pub async fn run_pending_locked(url: &str) -> Result<Vec<String>, StoreError> {
    with_sync_connection(url, |conn| {
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .execute(conn)?;
        let result = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|applied| applied.iter().map(ToString::to_string).collect())
            .map_err(StoreError::Other);
        diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .execute(conn)?;
        result
    })
    .await
}

/// Reverts every applied migration (tests and `down.sql` checks only).
pub async fn revert_all(url: &str) -> Result<(), StoreError> {
    with_sync_connection(url, |conn| {
        conn.revert_all_migrations(MIGRATIONS)
            .map_err(StoreError::Other)?;
        Ok(())
    })
    .await
}

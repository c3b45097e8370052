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
/// migration harness is synchronous. The connection honours the URL's `sslmode` and
/// `sslrootcert` like the pool's.
async fn with_sync_connection<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(&mut SyncConnection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let mut conn = crate::runtime::tls::establish(url).await?;
    // Unnamed statements only: `pending` runs at every start, possibly through a pooler in
    // transaction mode, and migrations are too few for a statement cache to matter.
    diesel_async::AsyncConnection::set_prepared_statement_cache_size(
        &mut conn,
        diesel::connection::CacheSize::Disabled,
    );
    tokio::task::spawn_blocking(move || {
        let mut conn = SyncConnection::from(conn);
        work(&mut conn)
    })
    .await
    .map_err(|e| StoreError::Other(Box::new(e)))?
}

#[derive(diesel::QueryableByName)]
struct BackendPid {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The refusal when the migration lock is not held by one session.
const POOLER_REFUSAL: &str = "migrations must run against PostgreSQL directly, not through a \
     connection pooler in transaction mode (PgBouncer pool_mode=transaction): the migration \
     lock is a session lock, which such a pooler does not keep for one session; nothing was \
     applied. Point --database-url (DATABASE_URL) of `order-ingest migrate` or of the \
     --migrate start at the database itself";

/// Proves that the session-level migration lock taken as backend `pid` stays with this
/// session: a second, new session must not find itself on the lock holder's backend (a
/// transaction pooler hands the idle server connection that holds the lock to the next
/// client; PostgreSQL itself never does), and this session must still be on `pid`. If the
/// second session does land on the holder, it releases the lock there in the same statement,
/// so that a refused run leaves no lock behind on the pooler's server connection.
fn check_session_holds_lock(
    url: &str,
    conn: &mut SyncConnection,
    pid: i32,
) -> Result<(), StoreError> {
    let (classid, objid) = lock_key_parts();
    let probe = tokio::runtime::Handle::current().block_on(crate::runtime::tls::establish(url));
    let mut probe = SyncConnection::from(probe?);
    let shared: Count = diesel::sql_query(format!(
        "SELECT count(pg_advisory_unlock({MIGRATION_LOCK_KEY}))::int8 AS n FROM pg_locks \
         WHERE locktype = 'advisory' AND classid = '{classid}'::oid AND objid = '{objid}'::oid \
         AND objsubid = 1 AND granted AND pid = pg_backend_pid()"
    ))
    .get_result(&mut probe)?;
    drop(probe);
    let now: BackendPid = diesel::sql_query("SELECT pg_backend_pid() AS pid").get_result(conn)?;
    if shared.n > 0 || now.pid != pid {
        return Err(StoreError::MigrationLockShared(POOLER_REFUSAL.to_owned()));
    }
    Ok(())
}

/// The advisory lock key as `pg_locks` shows a bigint key: high and low 32 bits.
fn lock_key_parts() -> (u32, u32) {
    let key = MIGRATION_LOCK_KEY as u64;
    ((key >> 32) as u32, (key & 0xffff_ffff) as u32)
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
    let probe_url = url.to_owned();
    with_sync_connection(url, move |conn| {
        let locked: BackendPid = diesel::sql_query(format!(
            "SELECT pg_backend_pid() AS pid FROM (SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})) AS l"
        ))
        .get_result(conn)?;
        if let Err(refusal) = check_session_holds_lock(&probe_url, conn, locked.pid) {
            let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                .execute(conn);
            return Err(refusal);
        }
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

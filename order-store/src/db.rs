//! Connection pool and start-up: the configuration both binaries share.

use std::time::Duration;

use diesel::connection::CacheSize;
use diesel_async::pooled_connection::bb8::{Pool as Bb8Pool, PooledConnection};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection as _, AsyncPgConnection};

use crate::error::StoreError;
use crate::migrations;
use crate::runtime::tls;

/// A pool of connections to `orderdb`.
pub type Pool = Bb8Pool<AsyncPgConnection>;
/// A connection checked out of [`Pool`].
pub type PooledConn = PooledConnection<'static, AsyncPgConnection>;

/// Database flags shared by `order-api` and `order-ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// PostgreSQL URL of orderdb.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://order_user:order_pass@localhost:5432/orderdb",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Largest number of connections this process opens.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,

    /// How long to wait for a connection (connect, or a free one from the pool), in milliseconds.
    #[arg(long, env = "DB_CONNECT_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub db_connect_timeout_ms: u64,

    /// Apply pending migrations at start-up (under an advisory lock) instead of refusing to start.
    #[arg(long, env = "ORDER_MIGRATE", default_value_t = false)]
    pub migrate: bool,

    /// Named prepared statements and their per-connection cache; `off` behind a pooler in
    /// transaction mode (PgBouncer `pool_mode = transaction`), where each query is then parsed
    /// and run in one round trip on an unnamed statement.
    #[arg(long, env = "DB_PREPARED_STATEMENTS", value_enum, default_value_t = OnOff::On)]
    pub db_prepared_statements: OnOff,
}

/// A switch written `on` or `off` on the command line and in the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl DbArgs {
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            database_url: url.into(),
            db_pool_size: 10,
            db_connect_timeout_ms: 5000,
            migrate: false,
            db_prepared_statements: OnOff::On,
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.db_connect_timeout_ms)
    }
}

/// Adds the socket settings that let a dead server be noticed, so the pool does not keep
/// handing out connections to a server that restarted or failed over: a connect timeout and
/// TCP keepalives. Settings already in the URL win.
pub fn with_socket_settings(
    url: &str,
    connect_timeout: Duration,
    application_name: &str,
) -> String {
    let mut url = url.to_owned();
    let mut add = |key: &str, value: String| {
        if !url.contains(&format!("{key}=")) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(key);
            url.push('=');
            url.push_str(&value);
        }
    };
    add(
        "connect_timeout",
        connect_timeout.as_secs().max(1).to_string(),
    );
    add("keepalives", "1".into());
    add("keepalives_idle", "30".into());
    add("application_name", application_name.into());
    url
}

/// Builds the pool without touching the database: connections are opened on demand, and a
/// broken one (its socket closed by a server restart) is dropped at checkout, never handed out.
/// Connections honour the URL's `sslmode` and `sslrootcert` ([`tls`]); a bad TLS set-up (an
/// unreadable CA file, an unknown `sslmode`) is the error of every checkout, so start-up
/// ([`prepare_database`]) reports it.
pub fn build_pool(args: &DbArgs, application_name: &str) -> Pool {
    let url = with_socket_settings(&args.database_url, args.connect_timeout(), application_name);
    let mut config = ManagerConfig::default();
    // At checkout, bb8 asks the manager whether the connection still works; `Fast` answers from
    // the connection's own state (closed socket, open transaction) without a round trip.
    config.recycling_method = RecyclingMethod::Fast;
    let (url, connector) = match tls::split_pg_url(&url) {
        Ok((url, params)) => (
            url,
            tls::PgConnector::new(&params).map_err(|e| e.to_string()),
        ),
        Err(e) => (String::new(), Err(e.to_string())),
    };
    let connector = std::sync::Arc::new(connector);
    let prepared_statements = args.db_prepared_statements;
    config.custom_setup = Box::new(move |url| {
        let connector = connector.clone();
        let url = url.to_owned();
        Box::pin(async move {
            let connector = connector
                .as_ref()
                .as_ref()
                .map_err(|e| diesel::ConnectionError::BadConnection(e.clone()))?;
            let mut conn = connector.establish(&url).await?;
            if prepared_statements == OnOff::Off {
                conn.set_prepared_statement_cache_size(CacheSize::Disabled);
            }
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    Bb8Pool::builder()
        .max_size(args.db_pool_size)
        .min_idle(Some(0))
        .connection_timeout(args.connect_timeout())
        .test_on_check_out(true)
        .retry_connection(false)
        .build_unchecked(manager)
}

/// Start-up of either binary: the database must answer, and its schema must be current.
/// With `args.migrate`, pending migrations are applied first (under an advisory lock, so pods
/// starting together take turns); without it, pending migrations are an error naming the fix.
pub async fn prepare_database(args: &DbArgs, application_name: &str) -> Result<Pool, StoreError> {
    let url = with_socket_settings(&args.database_url, args.connect_timeout(), application_name);
    if args.migrate {
        let applied = migrations::run_pending_locked(&url).await?;
        for name in applied {
            tracing::info!(migration = %name, "applied migration");
        }
    } else {
        let pending = migrations::pending(&url).await?;
        if !pending.is_empty() {
            return Err(StoreError::SchemaNotCurrent { pending });
        }
    }
    let pool = build_pool(args, application_name);
    // One checkout proves the pool's settings work before the service reports itself started.
    drop(pool.get().await?);
    Ok(pool)
}

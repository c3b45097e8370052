//! The one place every setting is read: command-line flags, each with an environment variable,
//! so that the same binary runs from a shell, docker-compose or Kubernetes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use order_store::DbArgs;

/// Shared with order-ingest, as is the log set-up it selects (`order_store::runtime::process`).
pub use order_store::runtime::process::LogFormat;

/// order-api: the REST and GraphQL API over orderdb.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "order-api", version, about)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "ORDER_API_ADDR", default_value = "0.0.0.0:8088")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub db: DbArgs,

    /// PostgreSQL URL of a read replica (a streaming-replication standby, or a pooler in front
    /// of several) that serves reads while it is up and current; unset: everything on the
    /// primary. Takes the same sslmode/sslrootcert parameters as --database-url and honours
    /// --db-prepared-statements.
    #[arg(long, env = "READ_DATABASE_URL", hide_env_values = true)]
    pub read_database_url: Option<String>,

    /// Largest number of connections to the read replica [default: --db-pool-size].
    #[arg(long, env = "READ_DB_POOL_SIZE", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub read_db_pool_size: Option<u32>,

    /// Reads go to the primary while the read replica lags more than this, in milliseconds.
    #[arg(long, env = "ORDER_READ_MAX_LAG_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub read_max_lag_ms: u64,

    /// Log line format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// URL of the JWKS the tokens are verified against: https (certificate verified against
    /// the platform roots plus SSL_CERT_FILE) or http, e.g.
    /// `http://user-service:8080/.well-known/jwks.json`.
    #[arg(long, env = "ORDER_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// PEM file with the public key (RSA or P-256 EC) the tokens are verified against.
    #[arg(long, env = "ORDER_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Accepted token issuers (`iss`), comma-separated. Required unless auth is disabled.
    #[arg(long, env = "ORDER_JWT_ISSUERS", value_delimiter = ',')]
    pub jwt_issuers: Vec<String>,

    /// The audience (`aud`) a token must contain.
    #[arg(long, env = "ORDER_JWT_AUDIENCE", default_value = "reactive-test-api")]
    pub jwt_audience: String,

    /// Serve every route without a token. Only for local development: it must be asked for
    /// explicitly, the server never falls back to it.
    #[arg(long, env = "ORDER_AUTH_DISABLED", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub auth_disabled: bool,

    /// Largest accepted request body, in bytes (larger bodies get 413).
    #[arg(long, env = "ORDER_MAX_BODY_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub max_body_bytes: u64,

    /// Upper bound on one database operation (checkout plus query), in milliseconds; past it
    /// the request answers 503 instead of hanging on a silent database.
    #[arg(long, env = "ORDER_DB_QUERY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_query_timeout_ms: u64,

    /// After SIGTERM, how long the server keeps serving while readiness answers 503, so that
    /// load balancers stop routing here before the listener closes (ms; 0 for local runs).
    #[arg(long, env = "ORDER_SHUTDOWN_DELAY_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub shutdown_delay_ms: u64,
}

impl Config {
    /// The read replica's database settings: the primary's, with the read URL and pool size.
    pub fn read_db(&self) -> Option<DbArgs> {
        // An empty value (a Secret key left blank) means no read replica, like no value.
        let url = self
            .read_database_url
            .as_ref()
            .filter(|url| !url.trim().is_empty())?;
        Some(DbArgs {
            database_url: url.clone(),
            db_pool_size: self.read_db_pool_size.unwrap_or(self.db.db_pool_size),
            migrate: false,
            ..self.db.clone()
        })
    }

    pub fn read_max_lag(&self) -> Duration {
        Duration::from_millis(self.read_max_lag_ms)
    }

    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_millis(self.shutdown_delay_ms)
    }

    pub fn db_query_timeout(&self) -> Duration {
        Duration::from_millis(self.db_query_timeout_ms)
    }
}

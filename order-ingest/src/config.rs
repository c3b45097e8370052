//! Command line and environment: one clap struct, every flag also an environment variable, so
//! the same binary runs from a shell, a compose file or a Kubernetes manifest unchanged.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use order_store::db::OnOff;
pub use order_store::runtime::process::LogFormat;
use order_store::DbArgs;
use uuid::Uuid;

use crate::client::RedisClient;
pub use crate::client::RedisMode;

/// Consumes checkout's OrderCompleted events from a Redis stream into orderdb.
///
/// By default it joins the consumer group and runs until SIGTERM/SIGINT. `--replay` re-reads
/// the stream without the group; `backfill` copies checkout's orders table once.
#[derive(Debug, Clone, Parser)]
#[command(name = "order-ingest", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub stream: StreamArgs,

    #[command(flatten)]
    pub outbox: OutboxArgs,

    /// Address of the health and metrics server (/health/live, /health/ready, /metrics).
    #[arg(
        long,
        env = "ORDER_INGEST_METRICS_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_addr: SocketAddr,

    /// Log line format (the level filter comes from RUST_LOG, default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Re-read the stream with XRANGE (no consumer group, pending list untouched), insert what
    /// is missing, print a summary and exit. Entries that fail permanently are reported (log
    /// line and summary) but NOT written to the dead-letter stream: the live consumer already
    /// dead-lettered them once, and a replay must be repeatable without duplicating dead
    /// letters. Exit status 1 when any entry failed.
    #[arg(long, env = "ORDER_REPLAY", default_value_t = false)]
    pub replay: bool,

    /// Where --replay starts (inclusive): a stream id (`1734100000000-0` or `1734100000000`),
    /// an RFC 3339 time (`2025-12-13T16:44:00Z`) or `0` for the beginning.
    #[arg(long, env = "ORDER_REPLAY_FROM", default_value = "0", requires = "replay", value_parser = parse_stream_bound)]
    pub from: StreamBound,

    /// Where --replay stops (inclusive): a stream id or an RFC 3339 time; the stream's end by default.
    #[arg(long, env = "ORDER_REPLAY_TO", requires = "replay", value_parser = parse_stream_bound)]
    pub to: Option<StreamBound>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// One-time copy of checkout's `orders` table into orderdb.orders, idempotent and resumable.
    Backfill(BackfillArgs),
    /// Publish synthetic OrderCompleted events in checkout's exact format on --stream-key
    /// (local demo, benchmarks, smoke tests).
    PublishSample(crate::sample::PublishArgs),
    /// Apply pending migrations to orderdb (under an advisory lock) and exit: the deploy
    /// pipeline's migration job.
    Migrate,
    /// Inspect and redrive the dead-letter stream `<stream>:dlq`.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first: id, errorClass, original streamId, eventId, failedAt,
    /// delivery count and error message; then a count per error class.
    List {
        /// Dead letters to show at most.
        #[arg(long, env = "DLQ_LIST_COUNT", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        count: u64,
    },
    /// Put dead letters back on the stream (checkout's field layout, payload verbatim), then
    /// remove each from the dead-letter stream. Two steps per entry, not one transaction (on a
    /// Redis Cluster the two streams are in different hash slots): a crash between them leaves
    /// the entry in the dead-letter stream too, so a later redrive publishes it twice; the
    /// idempotent insert stores its order once.
    Redrive {
        /// Dead-letter ids to redrive (as `dlq list` shows them); repeatable.
        #[arg(
            long = "id",
            env = "DLQ_REDRIVE_IDS",
            value_name = "ID",
            value_delimiter = ',',
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        ids: Vec<String>,
        /// Redrive every dead letter.
        #[arg(long, env = "DLQ_REDRIVE_ALL")]
        all: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// PostgreSQL URL of checkout's database (the one with the source `orders` table).
    #[arg(long, env = "BACKFILL_SOURCE_DATABASE_URL", hide_env_values = true)]
    pub source_database_url: String,

    /// Resume after this order id (the last id of the previous run's progress output). Without
    /// it the copy starts from the beginning, which is also safe: rows present are skipped.
    #[arg(long, env = "BACKFILL_AFTER")]
    pub after: Option<Uuid>,

    /// Named prepared statements on the source database; `off` when it sits behind a pooler
    /// in transaction mode. Default: the same as --db-prepared-statements.
    #[arg(long, env = "BACKFILL_SOURCE_DB_PREPARED_STATEMENTS", value_enum)]
    pub source_db_prepared_statements: Option<OnOff>,

    /// Rows read and inserted per batch.
    #[arg(long, env = "BACKFILL_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,

    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub timeouts: Timeouts,
}

/// The consumer's Redis side.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Redis URL: one server, or any node of a Redis Cluster, or several comma-separated seed
    /// nodes of one cluster (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// `auto` asks the server at start-up whether it is a Redis Cluster node (`INFO cluster`);
    /// `standalone` or `cluster` say so, and a server that disagrees stops the start-up.
    #[arg(long, env = "REDIS_MODE", value_enum, default_value_t = RedisMode::Auto)]
    pub redis_mode: RedisMode,

    /// The stream checkout publishes to; dead letters go to `<stream>:dlq`.
    #[arg(long, env = "ORDER_STREAM_KEY", default_value = "orders:completed")]
    pub stream_key: String,

    /// Consumer group shared by every ingest pod.
    #[arg(long, env = "ORDER_CONSUMER_GROUP", default_value = "order-service")]
    pub consumer_group: String,

    /// This pod's consumer name, unique within the group [default: $HOSTNAME, else the host name].
    #[arg(long, env = "ORDER_CONSUMER_NAME")]
    pub consumer_name: Option<String>,

    /// The CloudEvent type consumed; other types are acknowledged and skipped.
    #[arg(
        long,
        env = "ORDER_EVENT_TYPE",
        default_value = "org.example.checkout.OrderCompleted"
    )]
    pub event_type: String,

    /// Entries per read, and so orders per INSERT.
    #[arg(long, env = "ORDER_BATCH_SIZE", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,

    /// How long one XREADGROUP blocks waiting for entries, in milliseconds.
    #[arg(long, env = "ORDER_BLOCK_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub block_ms: u64,

    /// Entries pending on another consumer for longer than this (ms) are claimed (XAUTOCLAIM).
    #[arg(long, env = "ORDER_CLAIM_IDLE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub claim_idle_ms: u64,

    /// An entry delivered more times than this goes to the dead-letter stream.
    #[arg(long, env = "ORDER_MAX_DELIVERIES", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_deliveries: u64,

    /// Where a consumer group that does not exist yet starts: `0` (the whole stream), `$`
    /// (only entries added from now on) or a stream id. An existing group is never moved.
    #[arg(long, env = "ORDER_GROUP_START", default_value = "0", value_parser = parse_group_start)]
    pub group_start: String,

    #[command(flatten)]
    pub timeouts: Timeouts,
}

impl StreamArgs {
    /// Defaults for tests and embedding, with the given stream and consumer.
    pub fn new(redis_url: &str, stream_key: &str, consumer_name: &str) -> Self {
        Self {
            redis_url: redis_url.to_owned(),
            redis_mode: RedisMode::Auto,
            stream_key: stream_key.to_owned(),
            consumer_group: "order-service".to_owned(),
            consumer_name: Some(consumer_name.to_owned()),
            event_type: "org.example.checkout.OrderCompleted".to_owned(),
            batch_size: 200,
            block_ms: 2000,
            claim_idle_ms: 30_000,
            max_deliveries: 5,
            group_start: "0".to_owned(),
            timeouts: Timeouts::default(),
        }
    }

    /// A client of the Redis `--redis-url` names, in `--redis-mode`.
    pub fn redis_client(&self) -> redis::RedisResult<RedisClient> {
        RedisClient::new(&self.redis_url, self.redis_mode)
    }

    pub fn dlq_key(&self) -> String {
        format!("{}:dlq", self.stream_key)
    }

    pub fn block(&self) -> Duration {
        Duration::from_millis(self.block_ms)
    }

    /// The consumer name: the flag, else `$HOSTNAME`, else the kernel's host name, else a
    /// random one (unique is what matters; a stable name lets a restarted pod find its own
    /// pending entries first).
    pub fn resolved_consumer_name(&self) -> String {
        let non_empty = |s: String| {
            let s = s.trim().to_owned();
            (!s.is_empty()).then_some(s)
        };
        self.consumer_name
            .clone()
            .and_then(non_empty)
            .or_else(|| std::env::var("HOSTNAME").ok().and_then(non_empty))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .and_then(non_empty)
            })
            .unwrap_or_else(|| format!("order-ingest-{}", Uuid::new_v4().simple()))
    }
}

/// The database timeout, shared by consume, `--replay` and `backfill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct Timeouts {
    /// Longest one database operation may take (a connection and one batch insert, or one
    /// page read by backfill), in milliseconds; past it, it is retried like an outage.
    #[arg(long = "db-timeout-ms", env = "ORDER_INGEST_DB_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub db_timeout_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            db_timeout_ms: 30_000,
        }
    }
}

impl Timeouts {
    pub fn db(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }
}

/// The outbox relay (`order_ingest::outbox`) of a consume process.
#[derive(Debug, Clone, Args)]
pub struct OutboxArgs {
    /// Publish the order changes that order-api commits (the outbox) to --updates-stream-key
    /// from this process: `true` or `false`. One relay publishes at a time across all pods.
    #[arg(long = "outbox-relay", env = "ORDER_OUTBOX_RELAY", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub relay: bool,

    /// The stream the OrderUpdated events are published on.
    #[arg(
        long,
        env = "ORDER_UPDATES_STREAM_KEY",
        default_value = "orders:updated"
    )]
    pub updates_stream_key: String,

    /// Approximate length the updates stream is trimmed to (`XADD … MAXLEN ~`), never below it.
    #[arg(long, env = "ORDER_UPDATES_STREAM_MAXLEN", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub updates_stream_maxlen: u64,
}

impl OutboxArgs {
    /// The defaults, publishing to `stream_key`.
    pub fn new(stream_key: &str) -> Self {
        Self {
            relay: true,
            updates_stream_key: stream_key.to_owned(),
            updates_stream_maxlen: 1_000_000,
        }
    }
}

/// `--group-start`: `0`, `$`, or a stream id (`<ms>` or `<ms>-<seq>`).
pub fn parse_group_start(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text == "0" || text == "$" || is_stream_id(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a group start: use 0 (the whole stream), $ (new entries only) or a stream id (<ms>-<seq>)"
        ))
    }
}

/// `<ms>` or `<ms>-<seq>`, both unsigned 64-bit numbers.
fn is_stream_id(text: &str) -> bool {
    let mut parts = text.splitn(2, '-');
    let ms = parts.next().unwrap_or_default();
    let seq = parts.next();
    !ms.is_empty()
        && ms.bytes().all(|b| b.is_ascii_digit())
        && ms.parse::<u64>().is_ok()
        && seq.is_none_or(|s| !s.is_empty() && s.parse::<u64>().is_ok())
}

/// A bound of an XRANGE, already in the form Redis takes (`-`, `1734100000000-0`, `1734100000000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamBound(pub String);

/// `0` (or `-`) is the beginning; `<ms>` or `<ms>-<seq>` is a stream id; anything else must be
/// an RFC 3339 time (Java's seconds-less form accepted), turned into its millisecond id.
pub fn parse_stream_bound(text: &str) -> Result<StreamBound, String> {
    let text = text.trim();
    if text == "0" || text == "-" {
        return Ok(StreamBound("-".to_owned()));
    }
    if text == "+" {
        return Ok(StreamBound("+".to_owned()));
    }
    if is_stream_id(text) {
        return Ok(StreamBound(text.to_owned()));
    }
    let time = order_store::models::instant::parse(text).map_err(|_| {
        format!("{text:?} is neither a stream id (<ms>-<seq>), 0, nor an RFC 3339 time")
    })?;
    let ms = u64::try_from(time.timestamp_millis())
        .map_err(|_| format!("{text:?} is before 1970, where no stream id can be"))?;
    Ok(StreamBound(ms.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_bounds() {
        assert_eq!(parse_stream_bound("0").unwrap().0, "-");
        assert_eq!(
            parse_stream_bound("1734100000000-5").unwrap().0,
            "1734100000000-5"
        );
        assert_eq!(
            parse_stream_bound("1734100000000").unwrap().0,
            "1734100000000"
        );
        assert_eq!(
            parse_stream_bound("1970-01-01T00:00:01Z").unwrap().0,
            "1000"
        );
        assert_eq!(parse_stream_bound("1970-01-01T00:01Z").unwrap().0, "60000");
        assert!(parse_stream_bound("yesterday").is_err());
        assert!(parse_stream_bound("12-").is_err());
    }

    #[test]
    fn group_starts() {
        assert_eq!(parse_group_start("0").unwrap(), "0");
        assert_eq!(parse_group_start("$").unwrap(), "$");
        assert_eq!(
            parse_group_start("1734100000000-5").unwrap(),
            "1734100000000-5"
        );
        assert!(parse_group_start("latest").is_err());
        assert!(parse_group_start("-").is_err());
        assert!(parse_group_start("5-").is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

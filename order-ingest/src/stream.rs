//! Redis connections with hard deadlines, and stream entries as ingest sees them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::streams::StreamId;
use redis::{FromRedisValue, Value};

use crate::client::{Connection, RedisClient};
use crate::metrics::RedisErrors;

/// A Redis failure. Every one of them is transient for the consumer: the loop backs off and
/// tries again, and nothing is dead-lettered because Redis misbehaved.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer in time. The connection is discarded: a blocking read on a half-dead socket
    /// can otherwise wait forever.
    #[error("redis did not answer within {0:?}")]
    Deadline(Duration),
}

impl RedisFailure {
    /// The group (or the whole stream) is gone, e.g. the key was evicted (docs/compatibility.md §6.7).
    pub fn is_no_group(&self) -> bool {
        matches!(self, RedisFailure::Redis(e) if e.code() == Some("NOGROUP"))
    }
}

/// One lazily (re)built connection, to one server or to a cluster ([`RedisClient`]): on a
/// cluster every command and pipeline goes to the node serving its key's slot, so a pipeline or
/// `MULTI` must name keys of one slot only. Blocking reads get a connection of their own, so
/// that a read parked in `BLOCK` never delays an `XACK` and a reset of one never disturbs the
/// other (on a cluster, its own connection to every node).
pub struct RedisConn {
    client: RedisClient,
    conn: Option<Connection>,
    deadline: Duration,
    /// On a cluster, the key whose master's `CLIENT ID` is kept in `client_id`: the node that
    /// parks this connection's blocking reads of that key.
    home_key: Option<String>,
    /// The server's `CLIENT ID` of the current connection (-1: none or unknown), so that
    /// another connection can wake a read parked in `BLOCK` with `CLIENT UNBLOCK`.
    client_id: Arc<AtomicI64>,
    /// Where failed commands are counted (`order_ingest_redis_errors_total`), if anywhere.
    errors: Option<RedisErrors>,
}

impl RedisConn {
    /// `deadline` bounds every command, including connecting. For a blocking read it must be
    /// longer than `BLOCK`, or the server delivers entries to a read the client already gave
    /// up on.
    pub fn new(client: impl Into<RedisClient>, deadline: Duration) -> Self {
        Self {
            client: client.into(),
            conn: None,
            deadline,
            home_key: None,
            client_id: Arc::new(AtomicI64::new(-1)),
            errors: None,
        }
    }

    /// Counts every failed command into `errors`, by command name.
    #[must_use]
    pub fn count_errors(mut self, errors: RedisErrors) -> Self {
        self.errors = Some(errors);
        self
    }

    /// On a cluster, [`RedisConn::client_id`] is this connection's id on the master serving
    /// `key` (on one server it is the id of the one connection anyway).
    #[must_use]
    pub fn home_key(mut self, key: &str) -> Self {
        self.home_key = Some(key.to_owned());
        self
    }

    pub fn client(&self) -> &RedisClient {
        &self.client
    }

    /// The current connection's server-side id, kept up to date across reconnects.
    pub fn client_id(&self) -> Arc<AtomicI64> {
        self.client_id.clone()
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Drops the connection; the next command opens a new one.
    pub fn reset(&mut self) {
        self.conn = None;
        self.client_id.store(-1, Ordering::SeqCst);
    }

    async fn connection(&mut self) -> Result<Connection, RedisFailure> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        // The client's response timeout is the deadline (redis-rs's default, 500 ms on one
        // server, would cut a BLOCK short, and a cluster's must be set explicitly too); the
        // tokio timeout below is the hard stop behind it.
        let mut conn = tokio::time::timeout(self.deadline, self.client.connect(self.deadline))
            .await
            .map_err(|_| RedisFailure::Deadline(self.deadline))??;
        let key = self.home_key.clone().unwrap_or_default();
        let id = tokio::time::timeout(
            self.deadline,
            conn.query_on_node_of::<i64>(&key, redis::cmd("CLIENT").arg("ID")),
        )
        .await;
        self.client_id
            .store(id.ok().and_then(Result::ok).unwrap_or(-1), Ordering::SeqCst);
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    fn failed(&mut self, error: &redis::RedisError) {
        // An error reply leaves the connection usable; anything else (I/O, parse, timeout)
        // may have left it out of step with the server, so it is rebuilt.
        if !matches!(
            error.kind(),
            redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
        ) {
            self.reset();
        }
    }

    pub async fn query<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T, RedisFailure> {
        let result = match self.connection().await {
            Ok(mut conn) => self.bounded(cmd.query_async(&mut conn)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.count_failure(|| command_name(cmd), e);
        }
        result
    }

    /// A pipeline's failure is counted once, under its first command's name.
    pub async fn pipe<T: FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisFailure> {
        let result = match self.connection().await {
            Ok(mut conn) => self.bounded(pipe.query_async(&mut conn)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.count_failure(
                || {
                    pipe.cmd_iter()
                        .next()
                        .map_or_else(|| "PIPELINE".to_owned(), command_name)
                },
                e,
            );
        }
        result
    }

    /// Every failure counts (connecting, deadline, error reply) except `BUSYGROUP`: that is
    /// `XGROUP CREATE`'s answer when the group already exists, the normal case at start-up.
    fn count_failure(&self, command: impl FnOnce() -> String, failure: &RedisFailure) {
        let Some(errors) = &self.errors else { return };
        if matches!(failure, RedisFailure::Redis(e) if e.code() == Some("BUSYGROUP")) {
            return;
        }
        errors.failed(&command());
    }

    /// `work` within the deadline; a connection left in doubt is dropped.
    async fn bounded<T>(
        &mut self,
        work: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisFailure> {
        match tokio::time::timeout(self.deadline, work).await {
            Err(_) => {
                self.reset();
                Err(RedisFailure::Deadline(self.deadline))
            }
            Ok(Err(e)) => {
                self.failed(&e);
                Err(e.into())
            }
            Ok(Ok(v)) => Ok(v),
        }
    }
}

/// The command's name as Redis knows it (`XREADGROUP`, `XACK`, `XINFO`, ...): its first
/// argument. Bounded: every command is built by this crate, never from input.
fn command_name(cmd: &redis::Cmd) -> String {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).to_ascii_uppercase(),
        _ => "UNKNOWN".to_owned(),
    }
}

/// Wakes the connection `client_id` if it is parked in a blocking command on `key`, as if its
/// `BLOCK` had expired. On a cluster the `CLIENT UNBLOCK` goes to the master serving `key`'s
/// slot, where the read is parked (a client id means nothing on another node). Best effort:
/// on any failure the parked read simply runs to its own end.
pub async fn unblock(client: &RedisClient, key: &str, client_id: i64) {
    if client_id < 0 {
        return;
    }
    let deadline = Duration::from_secs(1);
    let work = async {
        let mut conn = client.connect(deadline).await?;
        conn.query_on_node_of::<i64>(key, redis::cmd("CLIENT").arg("UNBLOCK").arg(client_id))
            .await
    };
    if let Ok(Err(e)) = tokio::time::timeout(deadline, work).await {
        tracing::debug!(error = %e, "could not unblock the parked read");
    }
}

/// A stream entry with the fields checkout writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream id (`1734100000000-0`).
    pub id: String,
    /// The `eventId` field, when present.
    pub event_id: Option<String>,
    /// The `payload` field as the publisher wrote it, byte for byte.
    pub payload: Option<Vec<u8>>,
    /// Times this entry was delivered to the group, when known (1 for a first read).
    pub deliveries: u64,
}

pub(crate) fn bytes_of(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

impl Entry {
    pub fn from_stream_id(id: &StreamId, deliveries: u64) -> Self {
        Self {
            id: id.id.clone(),
            event_id: id
                .map
                .get("eventId")
                .and_then(bytes_of)
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            payload: id.map.get("payload").and_then(bytes_of),
            deliveries,
        }
    }
}

//! Redis connections with hard deadlines, and stream entries as ingest sees them.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::StreamId;
use redis::{AsyncConnectionConfig, FromRedisValue, Value};

/// A Redis failure. Every one of them is transient for the consumer: the loop backs off and
/// tries again, and nothing is dead-lettered because Redis misbehaved.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer in time. The connection is discarded (FIELD-NOTES 1): a blocking read on a
    /// half-dead socket can otherwise wait forever.
    #[error("redis did not answer within {0:?}")]
    Deadline(Duration),
}

impl RedisFailure {
    /// The group (or the whole stream) is gone, e.g. the key was evicted (CONTRACT defect 7).
    pub fn is_no_group(&self) -> bool {
        matches!(self, RedisFailure::Redis(e) if e.code() == Some("NOGROUP"))
    }
}

/// One lazily (re)built connection. Blocking reads get one of their own, so that a read parked
/// in `BLOCK` never delays an `XACK` and a reset of one never disturbs the other.
pub struct RedisConn {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    deadline: Duration,
}

impl RedisConn {
    /// `deadline` bounds every command, including connecting. For a blocking read it must be
    /// longer than `BLOCK` (FIELD-NOTES 3), or the server delivers entries to a read the client
    /// already gave up on.
    pub fn new(client: redis::Client, deadline: Duration) -> Self {
        Self {
            client,
            conn: None,
            deadline,
        }
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Drops the connection; the next command opens a new one.
    pub fn reset(&mut self) {
        self.conn = None;
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, RedisFailure> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        // redis-rs's own response timeout defaults to 500 ms, shorter than any useful BLOCK;
        // ours is the deadline, and the tokio timeout below is the hard stop behind it.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.deadline))
            .set_response_timeout(Some(self.deadline));
        let conn = tokio::time::timeout(
            self.deadline,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| RedisFailure::Deadline(self.deadline))??;
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
        let mut conn = self.connection().await?;
        match tokio::time::timeout(self.deadline, cmd.query_async::<T>(&mut conn)).await {
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

    pub async fn pipe<T: FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisFailure> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(self.deadline, pipe.query_async::<T>(&mut conn)).await {
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

fn bytes_of(value: &Value) -> Option<Vec<u8>> {
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

/// The entries of an `XREADGROUP`/`XREAD` reply for one stream (`nil` when `BLOCK` expired).
pub fn entries_of(reply: Option<redis::streams::StreamReadReply>) -> Vec<StreamId> {
    reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default()
}

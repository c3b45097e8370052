//! The dead-letter stream `<stream>:dlq`.
//!
//! Fields of a dead letter: `eventId`, `payload` (the original string, byte for byte), `error`
//! (a human-readable message), `errorClass` (one of [`ErrorClass::as_str`]), `streamId` (the
//! id of the original entry), `failedAt` (RFC 3339, UTC) and, when the entry was redelivered,
//! `deliveryCount`. Dead letters are written before the original entry is acknowledged, so a
//! crash in between may duplicate one (same `streamId`), never lose one.
//!
//! The operator commands `dlq list` and `dlq redrive` ([`run`]) read and empty that stream.

use std::collections::BTreeMap;

use crate::config::{DlqCommand, StreamArgs};
use crate::event::ErrorClass;
use crate::retry::REDIS_COMMAND;
use crate::stream::{Entry, RedisConn, RedisFailure};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub stream_id: String,
    pub event_id: String,
    pub payload: Vec<u8>,
    pub error: String,
    pub class: ErrorClass,
    pub deliveries: u64,
    /// For logs only: the order, when the payload got as far as being one.
    pub order: Option<OrderRef>,
}

/// What identifies a dead-lettered order in log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRef {
    pub order_id: uuid::Uuid,
    pub order_number: String,
    pub checkout_session_id: Option<String>,
}

impl DeadLetter {
    pub fn new(entry: &Entry, event_id: Option<&str>, class: ErrorClass, error: String) -> Self {
        Self {
            stream_id: entry.id.clone(),
            event_id: entry
                .event_id
                .as_deref()
                .or(event_id)
                .unwrap_or_default()
                .to_owned(),
            payload: entry.payload.clone().unwrap_or_default(),
            error,
            class,
            deliveries: entry.deliveries,
            order: None,
        }
    }

    #[must_use]
    pub fn with_order(mut self, order: &order_store::NewOrder, session: Option<&str>) -> Self {
        self.order = Some(OrderRef {
            order_id: order.id,
            order_number: order.order_number.clone(),
            checkout_session_id: session.map(str::to_owned),
        });
        self
    }

    /// One warning line with everything that identifies the entry and why it failed.
    /// The line is logged in a span of its own, the dead letter's in the trace of its batch.
    pub fn log(&self, what: &str) {
        let order = self.order.as_ref();
        let span = tracing::debug_span!(
            "dead_letter",
            otel.name = "dead letter",
            otel.status_code = "ERROR",
            error.type = self.class.as_str(),
            messaging.message.id = %self.stream_id,
            cloudevents.event_id = %self.event_id,
        );
        let _entered = span.enter();
        tracing::warn!(
            orderId = order.map(|o| o.order_id.to_string()).unwrap_or_default(),
            orderNumber = order.map(|o| o.order_number.as_str()).unwrap_or_default(),
            checkoutSessionId = order
                .and_then(|o| o.checkout_session_id.as_deref())
                .unwrap_or_default(),
            streamId = %self.stream_id,
            eventId = %self.event_id,
            errorClass = self.class.as_str(),
            error = %self.error,
            deliveries = self.deliveries,
            "{what}"
        );
    }

    /// Appends this dead letter's `XADD` to `pipe`.
    pub fn add_to(&self, pipe: &mut redis::Pipeline, dlq_key: &str) {
        let failed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let cmd = pipe
            .cmd("XADD")
            .arg(dlq_key)
            .arg("*")
            .arg("eventId")
            .arg(&self.event_id)
            .arg("payload")
            .arg(&self.payload[..])
            .arg("error")
            .arg(&self.error)
            .arg("errorClass")
            .arg(self.class.as_str())
            .arg("streamId")
            .arg(&self.stream_id)
            .arg("failedAt")
            .arg(failed_at);
        if self.deliveries > 1 {
            cmd.arg("deliveryCount").arg(self.deliveries);
        }
    }
}

/// A dead letter as `order-ingest dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter {
    /// The dead letter's own id in `<stream>:dlq`.
    pub id: String,
    pub fields: BTreeMap<String, Vec<u8>>,
}

impl StoredDeadLetter {
    fn from_stream_id(entry: &redis::streams::StreamId) -> Self {
        Self {
            id: entry.id.clone(),
            fields: entry
                .map
                .iter()
                .filter_map(|(k, v)| crate::stream::bytes_of(v).map(|b| (k.clone(), b)))
                .collect(),
        }
    }

    pub fn field(&self, name: &str) -> Option<String> {
        self.fields
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// The CloudEvent `type` inside the payload, for the redriven entry's `eventType` field.
    fn event_type(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Type {
            #[serde(rename = "type")]
            ty: String,
        }
        let payload = self.fields.get("payload")?;
        serde_json::from_slice::<Type>(payload).ok().map(|t| t.ty)
    }
}

impl std::fmt::Display for StoredDeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let field = |name| self.field(name).unwrap_or_else(|| "-".to_owned());
        write!(
            f,
            "{}  {}  streamId={} eventId={} failedAt={} deliveries={}  {}",
            self.id,
            field("errorClass"),
            field("streamId"),
            field("eventId"),
            field("failedAt"),
            self.field("deliveryCount")
                .unwrap_or_else(|| "1".to_owned()),
            field("error"),
        )
    }
}

/// Why a `dlq` command failed. The Redis URL in the messages is the one given, without its
/// password.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("invalid --redis-url")]
    Client(#[source] redis::RedisError),
    #[error("cannot read {dlq_key} at {at}")]
    Read {
        dlq_key: String,
        at: String,
        #[source]
        source: RedisFailure,
    },
    #[error("redriving {id} failed; it is still in {dlq_key}")]
    Redrive {
        id: String,
        dlq_key: String,
        #[source]
        source: RedisFailure,
    },
    /// Requested ids that are not (or no longer) in the dead-letter stream; the others were
    /// redriven.
    #[error("not in {dlq_key}: {}", ids.join(", "))]
    Missing { dlq_key: String, ids: Vec<String> },
}

/// Runs one `dlq` subcommand on `stream`'s dead-letter stream, printing each dead letter it
/// shows or redrives and a summary line on stdout. `at` names the Redis server in messages.
pub async fn run(stream: &StreamArgs, at: &str, command: &DlqCommand) -> Result<(), DlqError> {
    let client = stream.redis_client().map_err(DlqError::Client)?;
    let mut dead_letters = DeadLetters {
        conn: RedisConn::new(client, REDIS_COMMAND),
        stream,
        dlq_key: stream.dlq_key(),
        at,
    };
    match command {
        DlqCommand::List { count } => dead_letters.list(*count).await,
        DlqCommand::Redrive { all: true, .. } => dead_letters.redrive_all().await,
        DlqCommand::Redrive { ids, all: false } => dead_letters.redrive(ids).await,
    }
}

/// The dead-letter stream of one stream, as the `dlq` subcommands use it.
struct DeadLetters<'a> {
    conn: RedisConn,
    stream: &'a StreamArgs,
    dlq_key: String,
    at: &'a str,
}

impl DeadLetters<'_> {
    /// `dlq list`: up to `count` dead letters, oldest first, then a count per error class.
    async fn list(&mut self, count: u64) -> Result<(), DlqError> {
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let letters = self.read("-", count).await?;
        let mut per_class = BTreeMap::<String, u64>::new();
        for letter in &letters {
            println!("{letter}");
            *per_class
                .entry(letter.field("errorClass").unwrap_or_default())
                .or_default() += 1;
        }
        let classes: Vec<String> = per_class.iter().map(|(c, n)| format!("{c}={n}")).collect();
        println!(
            "{} dead letter(s) shown from {}: {}",
            letters.len(),
            self.dlq_key,
            classes.join(" ")
        );
        Ok(())
    }

    /// `dlq redrive --all`: every dead letter there is when it starts.
    async fn redrive_all(&mut self) -> Result<(), DlqError> {
        let mut redriven = 0;
        // Page through a snapshot of what is there now; entries redriven and dead-lettered
        // again by a running consumer land after it and are not picked up twice.
        let mut start = "-".to_owned();
        loop {
            let page = self.read(&start, 500).await?;
            let Some(last) = page.last() else { break };
            start = format!("({}", last.id);
            for letter in &page {
                self.redrive_one(letter).await?;
                redriven += 1;
            }
        }
        self.redrove(redriven);
        Ok(())
    }

    /// `dlq redrive --id …`: the dead letters named, those found; `Err` naming the others
    /// once the found ones are redriven.
    async fn redrive(&mut self, ids: &[String]) -> Result<(), DlqError> {
        let mut letters = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match read_dead_letters(&mut self.conn, &self.dlq_key, id, 1).await {
                Ok(found) if found.first().is_some_and(|l| &l.id == id) => letters.extend(found),
                Ok(_) => missing.push(id.clone()),
                Err(e) if is_refused_id(&e) => missing.push(id.clone()),
                Err(source) => return Err(self.read_error(source)),
            }
        }
        for letter in &letters {
            self.redrive_one(letter).await?;
        }
        self.redrove(letters.len());
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DlqError::Missing {
                dlq_key: self.dlq_key.clone(),
                ids: missing,
            })
        }
    }

    async fn read(&mut self, start: &str, count: usize) -> Result<Vec<StoredDeadLetter>, DlqError> {
        read_dead_letters(&mut self.conn, &self.dlq_key, start, count)
            .await
            .map_err(|source| self.read_error(source))
    }

    fn read_error(&self, source: RedisFailure) -> DlqError {
        DlqError::Read {
            dlq_key: self.dlq_key.clone(),
            at: self.at.to_owned(),
            source,
        }
    }

    async fn redrive_one(&mut self, letter: &StoredDeadLetter) -> Result<(), DlqError> {
        redrive_one(
            &mut self.conn,
            &self.stream.stream_key,
            &self.dlq_key,
            &self.stream.event_type,
            letter,
        )
        .await
        .map_err(|source| DlqError::Redrive {
            id: letter.id.clone(),
            dlq_key: self.dlq_key.clone(),
            source,
        })?;
        println!("redriven {letter}");
        Ok(())
    }

    fn redrove(&self, count: usize) {
        println!(
            "redrove {count} dead letter(s) from {} to {}",
            self.dlq_key, self.stream.stream_key
        );
    }
}

/// Whether `XRANGE` refused its start id: a plain `ERR` reply (redis-rs's `ResponseError`
/// kind), its only error reply to a command this module builds, is a start that is not a
/// stream id (`ERR Invalid stream ID …`). Other failures (no connection, a deadline, a
/// cluster's `MOVED`/`CLUSTERDOWN`, `NOPERM`, `WRONGTYPE`) have kinds or codes of their own.
fn is_refused_id(failure: &RedisFailure) -> bool {
    matches!(
        failure,
        RedisFailure::Redis(e)
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
    )
}

/// Up to `count` dead letters from `start` (inclusive; `-` for the oldest), oldest first.
async fn read_dead_letters(
    conn: &mut RedisConn,
    dlq_key: &str,
    start: &str,
    count: usize,
) -> Result<Vec<StoredDeadLetter>, RedisFailure> {
    let reply: redis::streams::StreamRangeReply = conn
        .query(&redis::Cmd::xrange_count(dlq_key, start, "+", count))
        .await?;
    Ok(reply
        .ids
        .iter()
        .map(StoredDeadLetter::from_stream_id)
        .collect())
}

/// Puts a dead letter back on the main stream with checkout's field layout (`eventId`,
/// `eventType`, `payload` verbatim), then removes it from the dead-letter stream: two commands,
/// because on a Redis Cluster the stream and its dead-letter stream live in different hash
/// slots, where one `MULTI` over both is refused (`CROSSSLOT`). The dead letter is deleted only
/// after the republished entry is in the stream, so a failure never loses one; a failure (or a
/// crash) between the two leaves it in the dead-letter stream as well, and redriving it again
/// republishes it once more. Ingest inserts idempotently, so an order redriven twice is stored
/// once (the second copy counts as a duplicate).
async fn redrive_one(
    conn: &mut RedisConn,
    stream_key: &str,
    dlq_key: &str,
    default_event_type: &str,
    letter: &StoredDeadLetter,
) -> Result<(), RedisFailure> {
    let payload = letter.fields.get("payload").map_or(&[][..], Vec::as_slice);
    let mut add = redis::cmd("XADD");
    add.arg(stream_key)
        .arg("*")
        .arg("eventId")
        .arg(letter.field("eventId").unwrap_or_default())
        .arg("eventType")
        .arg(
            letter
                .event_type()
                .unwrap_or_else(|| default_event_type.to_owned()),
        )
        .arg("payload")
        .arg(payload);
    conn.query::<String>(&add).await?;
    conn.query::<u64>(&redis::Cmd::xdel(dlq_key, &[&letter.id]))
        .await
        .map(drop)
}

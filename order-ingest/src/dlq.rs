//! The dead-letter stream `<stream>:dlq`.
//!
//! Fields of a dead letter: `eventId`, `payload` (the original string, byte for byte), `error`
//! (a human-readable message), `errorClass` (one of [`ErrorClass::as_str`]), `streamId` (the
//! id of the original entry), `failedAt` (RFC 3339, UTC) and, when the entry was redelivered,
//! `deliveryCount`. Dead letters are written before the original entry is acknowledged, so a
//! crash in between may duplicate one (same `streamId`), never lose one.

use crate::event::ErrorClass;
use crate::stream::Entry;

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
    pub fields: std::collections::BTreeMap<String, Vec<u8>>,
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

/// Up to `count` dead letters from `start` (inclusive; `-` for the oldest), oldest first.
pub async fn read_dead_letters(
    conn: &mut crate::stream::RedisConn,
    dlq_key: &str,
    start: &str,
    count: usize,
) -> Result<Vec<StoredDeadLetter>, crate::stream::RedisFailure> {
    let reply: redis::streams::StreamRangeReply = conn
        .query(&redis::Cmd::xrange_count(dlq_key, start, "+", count))
        .await?;
    Ok(reply
        .ids
        .iter()
        .map(StoredDeadLetter::from_stream_id)
        .collect())
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveSummary {
    pub redriven: u64,
    /// Requested ids that are not (or no longer) in the dead-letter stream.
    pub missing: Vec<String>,
}

/// Puts a dead letter back on the main stream with checkout's field layout (`eventId`,
/// `eventType`, `payload` verbatim), then removes it from the dead-letter stream: two commands,
/// because on a Redis Cluster the stream and its dead-letter stream live in different hash
/// slots, where one `MULTI` over both is refused (`CROSSSLOT`). The dead letter is deleted only
/// after the republished entry is in the stream, so a failure never loses one; a failure (or a
/// crash) between the two leaves it in the dead-letter stream as well, and redriving it again
/// republishes it once more. Ingest inserts idempotently, so an order redriven twice is stored
/// once (the second copy counts as a duplicate).
pub async fn redrive_one(
    conn: &mut crate::stream::RedisConn,
    stream_key: &str,
    dlq_key: &str,
    default_event_type: &str,
    letter: &StoredDeadLetter,
) -> Result<(), crate::stream::RedisFailure> {
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

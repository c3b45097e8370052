//! The transactional outbox of order changes (docs/compatibility.md §8): every SQL statement
//! on `order_outbox`, and the `OrderUpdated` CloudEvent a row becomes.
//!
//! The API inserts a row with [`record`] in the transaction of the change it describes, so an
//! event exists exactly when its change committed. The relay (order-ingest) takes the oldest
//! rows under a transaction-scoped advisory lock ([`try_lock_relay`], [`oldest`]), publishes
//! them, deletes exactly those ids ([`delete`]) and commits. Functions take
//! `&mut AsyncPgConnection`: callers own the transactions.

use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::error::StoreError;
use crate::models::{Order, OrderStatus};
use crate::orders::{Change, Changed};
use crate::schema::order_outbox;

/// The CloudEvent `type` of every event this outbox publishes.
pub const EVENT_TYPE: &str = "org.example.order.OrderUpdated";
/// The CloudEvent `source`: the platform's `urn:reactive-platform:{service}`.
pub const EVENT_SOURCE: &str = "urn:reactive-platform:order-service";

/// Key of the transaction-scoped advisory lock that makes one relay the publisher of a batch
/// ("outboxr1"). Transaction-scoped so that it works through a pooler in transaction mode,
/// and is released by the commit, a rollback or the death of the holder's connection.
const RELAY_LOCK_KEY: i64 = 0x6f75_7462_6f78_7231;

/// `data` of an `OrderUpdated` event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventData<'a> {
    change: Change,
    previous_status: OrderStatus,
    /// Serialized by `Order`'s own `Serialize`, as `GET /orders/{id}` answers.
    order: &'a Order,
}

/// Inserts the outbox row of `changed`; call it in the transaction that made the change.
/// `traceparent` is the W3C trace context of the request, when it is traced. Returns the
/// event's id, fixed from now on (a republished event keeps it).
pub async fn record(
    conn: &mut AsyncPgConnection,
    changed: &Changed,
    traceparent: Option<&str>,
) -> Result<Uuid, StoreError> {
    let data = serde_json::to_string(&EventData {
        change: changed.change,
        previous_status: changed.previous_status,
        order: &changed.order,
    })
    .map_err(|e| StoreError::Other(Box::new(e)))?;
    let event_id = Uuid::new_v4();
    diesel::insert_into(order_outbox::table)
        .values((
            order_outbox::event_id.eq(event_id),
            order_outbox::order_id.eq(changed.order.id),
            order_outbox::event_time.eq(changed.order.updated_at),
            order_outbox::traceparent.eq(traceparent),
            order_outbox::data.eq(data),
        ))
        .execute(conn)
        .await?;
    Ok(event_id)
}

/// One outbox row: an event not yet known to be published.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = order_outbox, check_for_backend(diesel::pg::Pg))]
pub struct OutboxEvent {
    pub id: i64,
    pub event_id: Uuid,
    pub order_id: Uuid,
    pub event_time: DateTime<Utc>,
    pub traceparent: Option<String>,
    /// `data` as JSON text, written once by [`record`].
    pub data: String,
}

/// The CloudEvent attributes of an `OrderUpdated` event, `data` apart.
#[derive(Serialize)]
struct Attributes<'a> {
    specversion: &'static str,
    id: Uuid,
    source: &'static str,
    #[serde(rename = "type")]
    event_type: &'static str,
    subject: Uuid,
    time: String,
    datacontenttype: &'static str,
    sequence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
}

impl OutboxEvent {
    /// The `sequence` extension: the row id, zero-padded to 20 digits so that it also sorts
    /// as text.
    pub fn sequence(&self) -> String {
        format!("{:020}", self.id)
    }

    /// The whole CloudEvent in structured mode (CloudEvents 1.0 JSON), as the stream entry's
    /// `payload`. `data` is spliced in as it was written, byte for byte.
    pub fn cloud_event(&self) -> String {
        let attributes = Attributes {
            specversion: "1.0",
            id: self.event_id,
            source: EVENT_SOURCE,
            event_type: EVENT_TYPE,
            subject: self.order_id,
            time: crate::models::instant::format(&self.event_time),
            datacontenttype: "application/json",
            sequence: self.sequence(),
            traceparent: self.traceparent.as_deref(),
        };
        // A struct of strings and UUIDs always serializes to a JSON object.
        let head = serde_json::to_string(&attributes).unwrap_or_else(|_| "{}".to_owned());
        let mut event = String::with_capacity(head.len() + self.data.len() + 8);
        event.push_str(head.strip_suffix('}').unwrap_or(&head));
        event.push_str(",\"data\":");
        event.push_str(&self.data);
        event.push('}');
        event
    }
}

/// Tries to become the publisher of the current transaction's batch: true when no other
/// relay holds the lock. Must run inside a transaction; the lock ends with it.
pub async fn try_lock_relay(conn: &mut AsyncPgConnection) -> Result<bool, StoreError> {
    Ok(diesel::select(
        sql::<Bool>("pg_try_advisory_xact_lock(")
            .bind::<BigInt, _>(RELAY_LOCK_KEY)
            .sql(")"),
    )
    .get_result(conn)
    .await?)
}

/// The oldest `limit` rows, in id order: per order, commit order.
pub async fn oldest(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<OutboxEvent>, StoreError> {
    Ok(order_outbox::table
        .order(order_outbox::id.asc())
        .limit(limit)
        .select(OutboxEvent::as_select())
        .load(conn)
        .await?)
}

/// Deletes exactly the rows `ids` (published), never a range: a row with a lower id may
/// commit after higher ones were published. Returns how many were deleted.
pub async fn delete(conn: &mut AsyncPgConnection, ids: &[i64]) -> Result<usize, StoreError> {
    Ok(
        diesel::delete(order_outbox::table.filter(order_outbox::id.eq_any(ids)))
            .execute(conn)
            .await?,
    )
}

/// How far behind publishing is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Rows not yet published.
    pub rows: i64,
    /// Age of the oldest of them in seconds (0 when there is none).
    pub oldest_age_seconds: f64,
}

/// The backlog as the database sees it now.
pub async fn backlog(conn: &mut AsyncPgConnection) -> Result<Backlog, StoreError> {
    let (rows, oldest_age_seconds) = order_outbox::table
        .select((
            sql::<BigInt>("count(*)"),
            sql::<Double>("COALESCE(EXTRACT(EPOCH FROM (now() - min(created_at)))::float8, 0)"),
        ))
        .get_result::<(i64, f64)>(conn)
        .await?;
    Ok(Backlog {
        rows,
        oldest_age_seconds: oldest_age_seconds.max(0.0),
    })
}

//! One batch, decode → `insert_if_absent` → outcomes, the same for the live consumer,
//! `--replay` and `backfill`: what differs between them is only how they retry and what they do
//! with an order that can never be stored (dead letter, or a report).

use std::time::{Duration, Instant};

use opentelemetry::trace::SpanContext;
use order_store::orders::{insert_if_absent, InsertOutcome, Rejection};
use order_store::{NewOrder, Pool, StoreError};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::dlq::DeadLetter;
use crate::event::{decode, Decoded, ErrorClass};
use crate::stream::Entry;

/// What became of one order of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Inserted,
    /// A row with this id exists (a redelivery or a republished event): nothing changed.
    AlreadyPresent,
    /// The order can never be stored as it is.
    Rejected(ErrorClass, String),
}

impl From<InsertOutcome> for Outcome {
    fn from(outcome: InsertOutcome) -> Self {
        match outcome {
            InsertOutcome::Inserted => Outcome::Inserted,
            InsertOutcome::AlreadyPresent => Outcome::AlreadyPresent,
            InsertOutcome::Rejected(Rejection { kind, message }) => {
                Outcome::Rejected(kind.into(), message)
            }
        }
    }
}

/// One `insert_if_absent` for `orders`, bounded by `timeout` (a hanging insert is treated as
/// a lost connection: it commits or not, and the retry finds out which).
///
/// A non-transient error that the store did not classify (no per-order rejection) is narrowed
/// down by inserting the orders one at a time: orders that fail alone while others of the
/// batch succeed are rejected (`store_rejected`). When every order fails the same way the
/// cause is the database, not the data (a permission, a missing table), so the batch's error
/// is returned for the caller to retry like an outage instead of rejecting good orders.
pub async fn insert(
    pool: &Pool,
    orders: &[NewOrder],
    timeout: Duration,
) -> Result<Vec<Outcome>, StoreError> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    match insert_timed(pool, orders, timeout).await {
        Ok(outcomes) => Ok(outcomes.into_iter().map(Outcome::from).collect()),
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            tracing::error!(error = %e, "batch insert failed; inserting one by one");
            insert_one_by_one(pool, orders, timeout).await?.ok_or(e)
        }
    }
}

/// One attempt, in its own database span (OpenTelemetry's database conventions: the
/// operation, never the values).
async fn insert_timed(
    pool: &Pool,
    orders: &[NewOrder],
    timeout: Duration,
) -> Result<Vec<InsertOutcome>, StoreError> {
    let span = order_store::runtime::telemetry::db_span("INSERT", Some(orders.len()));
    let work = async {
        let mut conn = pool.get().await?;
        insert_if_absent(&mut conn, orders).await
    };
    let result = crate::retry::within(timeout, "insert", work)
        .instrument(span.clone())
        .await;
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    result
}

/// The span of one batch read from `stream` (OpenTelemetry's messaging conventions). Each
/// event's own trace is linked to it by [`Batch::link_events`]: one batch holds events of
/// many traces, so they are links, not parents.
pub fn span(stream: &str, group: Option<&str>, entries: usize) -> tracing::Span {
    tracing::debug_span!(
        "batch",
        otel.name = %format_args!("process {stream}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "redis",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = stream,
        messaging.consumer.group.name = group.unwrap_or_default(),
        // An integer attribute, as the conventions define it: tracing-opentelemetry exports
        // unsigned integers as strings.
        messaging.batch.message_count = i64::try_from(entries).unwrap_or(i64::MAX),
    )
}

/// `Ok(None)`: every order failed, so the batch as a whole is to be retried.
/// `Err`: a transient failure on the way.
async fn insert_one_by_one(
    pool: &Pool,
    orders: &[NewOrder],
    timeout: Duration,
) -> Result<Option<Vec<Outcome>>, StoreError> {
    let mut outcomes = Vec::with_capacity(orders.len());
    // Whether any answer is about the orders rather than the database: a success, or a value
    // the database refuses (which fails the same way however often it is retried).
    let mut decided = false;
    for order in orders {
        match insert_timed(pool, std::slice::from_ref(order), timeout).await {
            Ok(mut one) => {
                decided = true;
                outcomes.push(one.pop().map_or(Outcome::AlreadyPresent, Outcome::from));
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(StoreError::InvalidData(message)) => {
                decided = true;
                outcomes.push(Outcome::Rejected(ErrorClass::InvalidValue, message));
            }
            Err(e) => outcomes.push(Outcome::Rejected(ErrorClass::StoreRejected, e.to_string())),
        }
    }
    Ok(decided.then_some(outcomes))
}

/// Counts of outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub inserted: u64,
    pub already_present: u64,
    pub rejected: u64,
}

impl Tally {
    pub fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Inserted => self.inserted += 1,
            Outcome::AlreadyPresent => self.already_present += 1,
            Outcome::Rejected(..) => self.rejected += 1,
        }
    }
}

/// Where an order of the batch came from.
struct Source {
    entry: usize,
    event_id: String,
    session: Option<String>,
    trace_context: Option<SpanContext>,
}

/// Stream entries decoded: the orders to insert, and the entries that can never become one.
pub struct Batch {
    decode_time: Duration,
    /// The orders to insert, in entry order.
    pub orders: Vec<NewOrder>,
    sources: Vec<Source>,
    /// Entries that can never be stored, as dead letters (written or only reported).
    pub failed: Vec<DeadLetter>,
    pub skipped: u64,
}

/// A batch after its insert.
pub struct Done {
    pub tally: Tally,
    pub skipped: u64,
    /// Every entry of the batch that can never be stored, decode failures first.
    pub failed: Vec<DeadLetter>,
    /// Time spent decoding.
    pub decode_time: Duration,
}

impl Batch {
    /// Decodes `entries`; an order event delivered more than `max_deliveries` times fails.
    /// The batch keeps no borrow of them: [`Batch::finish`] is handed the same entries again.
    pub fn decode(entries: &[Entry], event_type: &str, max_deliveries: u64) -> Self {
        let started = Instant::now();
        let mut batch = Batch {
            decode_time: Duration::ZERO,
            orders: Vec::new(),
            sources: Vec::new(),
            failed: Vec::new(),
            skipped: 0,
        };
        for (i, entry) in entries.iter().enumerate() {
            match decode(entry.payload.as_deref(), event_type) {
                Ok(Decoded::Skip(skip)) => {
                    batch.skipped += 1;
                    tracing::info!(
                        streamId = %entry.id,
                        eventId = entry.event_id.as_deref().unwrap_or_default(),
                        reason = skip.reason(),
                        "skipped entry"
                    );
                }
                Err(error) => {
                    batch
                        .failed
                        .push(DeadLetter::new(entry, None, error.class, error.message));
                }
                Ok(Decoded::Order(event)) if entry.deliveries > max_deliveries => {
                    batch.failed.push(
                        DeadLetter::new(
                            entry,
                            Some(&event.event_id),
                            ErrorClass::MaxDeliveriesExceeded,
                            format!(
                                "delivered {} times, more than --max-deliveries {max_deliveries}",
                                entry.deliveries
                            ),
                        )
                        .with_order(&event.order, event.checkout_session_id.as_deref()),
                    );
                }
                Ok(Decoded::Order(event)) => {
                    batch.sources.push(Source {
                        entry: i,
                        event_id: event.event_id,
                        session: event.checkout_session_id,
                        trace_context: event.trace_context,
                    });
                    batch.orders.push(event.order);
                }
            }
        }
        batch.decode_time = started.elapsed();
        batch
    }

    /// Links `span` (the batch's, from [`span`]) to the trace of each order event that carries one.
    pub fn link_events(&self, span: &tracing::Span) {
        for context in self.sources.iter().filter_map(|s| s.trace_context.clone()) {
            span.add_link(context);
        }
    }

    /// Applies the insert's `outcomes` (one per order, in order): logs each stored order and
    /// turns the rejected ones into failures. `entries` are those the batch was decoded from.
    pub fn finish(self, entries: &[Entry], outcomes: Vec<Outcome>) -> Done {
        let mut tally = Tally::default();
        let mut failed = self.failed;
        for ((order, source), outcome) in self.orders.iter().zip(&self.sources).zip(outcomes) {
            tally.count(&outcome);
            let entry = &entries[source.entry];
            let session = source.session.as_deref().unwrap_or_default();
            let message = match outcome {
                Outcome::Inserted => "inserted order",
                Outcome::AlreadyPresent => "duplicate order: already stored",
                Outcome::Rejected(class, message) => {
                    failed.push(
                        DeadLetter::new(entry, Some(&source.event_id), class, message)
                            .with_order(order, source.session.as_deref()),
                    );
                    continue;
                }
            };
            tracing::info!(
                orderId = %order.id,
                orderNumber = %order.order_number,
                eventId = %source.event_id,
                checkoutSessionId = session,
                streamId = %entry.id,
                "{message}"
            );
        }
        Done {
            tally,
            skipped: self.skipped,
            failed,
            decode_time: self.decode_time,
        }
    }
}

//! `insert_if_absent`: the idempotent batch insert of ingest, replay and backfill.

use std::collections::{HashMap, HashSet};

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{self as sql, Array, Int4, Nullable, Numeric, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::StoreError;
use crate::models::{NewOrder, OrderStatus, PaymentStatus};
use crate::schema::orders;

/// What `insert_if_absent` did with one order of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted,
    /// A row with this id exists (a redelivery or a republished event): nothing changed.
    AlreadyPresent,
    /// The order can never be stored as it is; retrying will not help.
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectionKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// A value does not fit its column (length, range, more than two decimals).
    InvalidValue,
    /// Another order (another id) already has this order number.
    OrderNumberTaken,
}

impl RejectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::InvalidValue => "invalid_value",
            RejectionKind::OrderNumberTaken => "order_number_conflict",
        }
    }
}

/// Inserts the orders that are not stored yet, keyed by id, in one transaction: one
/// `INSERT ... SELECT ... FROM unnest(...) ON CONFLICT DO NOTHING RETURNING id` for the whole
/// batch (one array per column) and at most one follow-up query for the rows it skipped.
/// Returns one outcome per input order, in order.
///
/// An order that cannot be stored (a value that does not fit, an order number held by another
/// id) is rejected alone; the rest of the batch commits. An `Err` means nothing was committed
/// and the whole call may be retried.
///
/// Why `unnest` rather than a multi-row `VALUES`: the statement text is the same for every
/// batch size (one prepared statement, where `VALUES` needs one per row count) and it has 24
/// parameters instead of 24 a row, so both sides encode and parse far less. The `JSONB`
/// columns are serialized straight from the typed structs to JSON text, without building a
/// `serde_json::Value` tree first.
///
/// The measurements behind both choices are in docs/decisions.md.
pub async fn insert_if_absent(
    conn: &mut AsyncPgConnection,
    batch: &[NewOrder],
) -> Result<Vec<InsertOutcome>, StoreError> {
    let mut outcomes: Vec<Option<InsertOutcome>> = vec![None; batch.len()];
    let mut first_index_of: HashMap<Uuid, usize> = HashMap::with_capacity(batch.len());
    let mut columns = Columns::with_capacity(batch.len());
    for (i, order) in batch.iter().enumerate() {
        if let Err(errors) = order.validate() {
            let message = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            outcomes[i] = Some(InsertOutcome::Rejected(Rejection {
                kind: RejectionKind::InvalidValue,
                message,
            }));
            continue;
        }
        if first_index_of.contains_key(&order.id) {
            continue; // a repeat within the batch: resolved below from its first occurrence
        }
        first_index_of.insert(order.id, i);
        columns.push(order)?;
    }

    let (inserted, present) = conn
        .transaction::<_, StoreError, _>(async |conn| {
            let inserted: HashSet<Uuid> = if columns.id.is_empty() {
                HashSet::new()
            } else {
                columns
                    .query()
                    .load::<InsertedId>(conn)
                    .await?
                    .into_iter()
                    .map(|row| row.id)
                    .collect()
            };
            let skipped: Vec<Uuid> = columns
                .id
                .iter()
                .copied()
                .filter(|id| !inserted.contains(id))
                .collect();
            let present: HashSet<Uuid> = if skipped.is_empty() {
                HashSet::new()
            } else {
                orders::table
                    .filter(orders::id.eq_any(&skipped))
                    .select(orders::id)
                    .load::<Uuid>(conn)
                    .await?
                    .into_iter()
                    .collect()
            };
            Ok((inserted, present))
        })
        .await?;

    let mut seen = HashSet::with_capacity(batch.len());
    Ok(batch
        .iter()
        .zip(outcomes)
        .map(|(order, outcome)| {
            if let Some(outcome) = outcome {
                return outcome;
            }
            let first = seen.insert(order.id);
            if inserted.contains(&order.id) {
                if first {
                    InsertOutcome::Inserted
                } else {
                    InsertOutcome::AlreadyPresent
                }
            } else if present.contains(&order.id) {
                InsertOutcome::AlreadyPresent
            } else {
                InsertOutcome::Rejected(Rejection {
                    kind: RejectionKind::OrderNumberTaken,
                    message: format!(
                        "orderNumber {} is taken by another order",
                        order.order_number
                    ),
                })
            }
        })
        .collect())
}

/// The insert: one array per column, unnested into rows. A `NULL` in a `NOT NULL` column with
/// a default takes that default (the table's, docs/compatibility.md §2: `0`, `'PENDING'`,
/// `'CREATED'`, `'[]'`, `now()`), as `DEFAULT` would in a multi-row `VALUES`.
/// `JSONB` values travel as text and are cast, as the server parses them either way.
const INSERT_UNNEST: &str = "\
INSERT INTO orders (id, store_number, order_number, customer_id, fulfillment_type, \
fulfillment_date, reservation_id, subtotal, discount_total, tax_total, fulfillment_cost, \
grand_total, payment_status, payment_method, payment_reference, status, line_items, \
applied_discounts, customer_snapshot, fulfillment_details, created_at, updated_at, created_by, \
session_id) \
SELECT id, store_number, order_number, customer_id, fulfillment_type, fulfillment_date, \
reservation_id, subtotal, COALESCE(discount_total, 0), COALESCE(tax_total, 0), \
COALESCE(fulfillment_cost, 0), grand_total, COALESCE(payment_status, 'PENDING'), \
payment_method, payment_reference, COALESCE(status, 'CREATED'), line_items::jsonb, \
COALESCE(applied_discounts::jsonb, '[]'), customer_snapshot::jsonb, fulfillment_details::jsonb, \
COALESCE(created_at, now()), COALESCE(updated_at, now()), created_by, session_id \
FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], \
$7::uuid[], $8::numeric[], $9::numeric[], $10::numeric[], $11::numeric[], $12::numeric[], \
$13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], \
$20::text[], $21::timestamptz[], $22::timestamptz[], $23::text[], $24::uuid[]) \
AS u(id, store_number, order_number, customer_id, fulfillment_type, fulfillment_date, \
reservation_id, subtotal, discount_total, tax_total, fulfillment_cost, grand_total, \
payment_status, payment_method, payment_reference, status, line_items, applied_discounts, \
customer_snapshot, fulfillment_details, created_at, updated_at, created_by, session_id) \
ON CONFLICT DO NOTHING RETURNING id";

#[derive(QueryableByName)]
struct InsertedId {
    #[diesel(sql_type = sql::Uuid)]
    id: Uuid,
}

/// The batch's rows as one array per column (the parameters of [`INSERT_UNNEST`]).
struct Columns<'a> {
    id: Vec<Uuid>,
    store_number: Vec<i32>,
    order_number: Vec<&'a str>,
    customer_id: Vec<Option<&'a str>>,
    fulfillment_type: Vec<&'static str>,
    fulfillment_date: Vec<Option<DateTime<Utc>>>,
    reservation_id: Vec<Option<Uuid>>,
    subtotal: Vec<&'a BigDecimal>,
    discount_total: Vec<Option<&'a BigDecimal>>,
    tax_total: Vec<Option<&'a BigDecimal>>,
    fulfillment_cost: Vec<Option<&'a BigDecimal>>,
    grand_total: Vec<&'a BigDecimal>,
    payment_status: Vec<Option<&'static str>>,
    payment_method: Vec<Option<&'a str>>,
    payment_reference: Vec<Option<&'a str>>,
    status: Vec<Option<&'static str>>,
    line_items: Vec<String>,
    applied_discounts: Vec<String>,
    customer_snapshot: Vec<Option<String>>,
    fulfillment_details: Vec<Option<String>>,
    created_at: Vec<Option<DateTime<Utc>>>,
    updated_at: Vec<Option<DateTime<Utc>>>,
    created_by: Vec<Option<&'a str>>,
    session_id: Vec<Option<Uuid>>,
}

/// JSON text of a typed value, for a `JSONB` column.
fn json_text<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(Box::new(e)))
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            store_number: Vec::with_capacity(n),
            order_number: Vec::with_capacity(n),
            customer_id: Vec::with_capacity(n),
            fulfillment_type: Vec::with_capacity(n),
            fulfillment_date: Vec::with_capacity(n),
            reservation_id: Vec::with_capacity(n),
            subtotal: Vec::with_capacity(n),
            discount_total: Vec::with_capacity(n),
            tax_total: Vec::with_capacity(n),
            fulfillment_cost: Vec::with_capacity(n),
            grand_total: Vec::with_capacity(n),
            payment_status: Vec::with_capacity(n),
            payment_method: Vec::with_capacity(n),
            payment_reference: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            line_items: Vec::with_capacity(n),
            applied_discounts: Vec::with_capacity(n),
            customer_snapshot: Vec::with_capacity(n),
            fulfillment_details: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
            updated_at: Vec::with_capacity(n),
            created_by: Vec::with_capacity(n),
            session_id: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, order: &'a NewOrder) -> Result<(), StoreError> {
        // The JSON first, so that a failure leaves every column the same length.
        let line_items = json_text(&order.line_items)?;
        let applied_discounts = json_text(&order.applied_discounts)?;
        let customer_snapshot = order
            .customer_snapshot
            .as_ref()
            .map(json_text)
            .transpose()?;
        let fulfillment_details = order
            .fulfillment_details
            .as_ref()
            .map(json_text)
            .transpose()?;
        self.id.push(order.id);
        self.store_number.push(order.store_number);
        self.order_number.push(&order.order_number);
        self.customer_id.push(order.customer_id.as_deref());
        self.fulfillment_type.push(order.fulfillment_type.as_str());
        self.fulfillment_date.push(order.fulfillment_date);
        self.reservation_id.push(order.reservation_id);
        self.subtotal.push(&order.subtotal);
        self.discount_total.push(order.discount_total.as_ref());
        self.tax_total.push(order.tax_total.as_ref());
        self.fulfillment_cost.push(order.fulfillment_cost.as_ref());
        self.grand_total.push(&order.grand_total);
        self.payment_status
            .push(order.payment_status.map(PaymentStatus::as_str));
        self.payment_method.push(order.payment_method.as_deref());
        self.payment_reference
            .push(order.payment_reference.as_deref());
        self.status.push(order.status.map(OrderStatus::as_str));
        self.line_items.push(line_items);
        self.applied_discounts.push(applied_discounts);
        self.customer_snapshot.push(customer_snapshot);
        self.fulfillment_details.push(fulfillment_details);
        self.created_at.push(order.created_at);
        self.updated_at.push(order.updated_at);
        self.created_by.push(order.created_by.as_deref());
        self.session_id.push(order.session_id);
        Ok(())
    }

    fn query(
        &self,
    ) -> impl diesel_async::methods::LoadQuery<'_, AsyncPgConnection, InsertedId> + '_ {
        type N<T> = Nullable<T>;
        diesel::sql_query(INSERT_UNNEST)
            .bind::<Array<sql::Uuid>, _>(&self.id)
            .bind::<Array<Int4>, _>(&self.store_number)
            .bind::<Array<Text>, _>(&self.order_number)
            .bind::<Array<N<Text>>, _>(&self.customer_id)
            .bind::<Array<Text>, _>(&self.fulfillment_type)
            .bind::<Array<N<Timestamptz>>, _>(&self.fulfillment_date)
            .bind::<Array<N<sql::Uuid>>, _>(&self.reservation_id)
            .bind::<Array<Numeric>, _>(&self.subtotal)
            .bind::<Array<N<Numeric>>, _>(&self.discount_total)
            .bind::<Array<N<Numeric>>, _>(&self.tax_total)
            .bind::<Array<N<Numeric>>, _>(&self.fulfillment_cost)
            .bind::<Array<Numeric>, _>(&self.grand_total)
            .bind::<Array<N<Text>>, _>(&self.payment_status)
            .bind::<Array<N<Text>>, _>(&self.payment_method)
            .bind::<Array<N<Text>>, _>(&self.payment_reference)
            .bind::<Array<N<Text>>, _>(&self.status)
            .bind::<Array<Text>, _>(&self.line_items)
            .bind::<Array<Text>, _>(&self.applied_discounts)
            .bind::<Array<N<Text>>, _>(&self.customer_snapshot)
            .bind::<Array<N<Text>>, _>(&self.fulfillment_details)
            .bind::<Array<N<Timestamptz>>, _>(&self.created_at)
            .bind::<Array<N<Timestamptz>>, _>(&self.updated_at)
            .bind::<Array<N<Text>>, _>(&self.created_by)
            .bind::<Array<N<sql::Uuid>>, _>(&self.session_id)
    }
}

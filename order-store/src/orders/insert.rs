//! `insert_if_absent`: the idempotent batch insert of ingest, replay and backfill.

use std::collections::{HashMap, HashSet};

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::StoreError;
use crate::models::{FulfillmentType, NewOrder, OrderStatus, PaymentStatus};
use crate::schema::orders;

/// Rows per INSERT statement: 25 parameters a row stays well under PostgreSQL's 65,535.
const INSERT_CHUNK: usize = 1000;

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

#[derive(Insertable)]
#[diesel(table_name = orders)]
struct InsertRow<'a> {
    id: Uuid,
    store_number: i32,
    order_number: &'a str,
    customer_id: Option<&'a str>,
    fulfillment_type: FulfillmentType,
    fulfillment_date: Option<DateTime<Utc>>,
    reservation_id: Option<Uuid>,
    subtotal: &'a BigDecimal,
    // `None` on a NOT NULL column with a default inserts DEFAULT.
    discount_total: Option<&'a BigDecimal>,
    tax_total: Option<&'a BigDecimal>,
    fulfillment_cost: Option<&'a BigDecimal>,
    grand_total: &'a BigDecimal,
    payment_status: Option<PaymentStatus>,
    payment_method: Option<&'a str>,
    payment_reference: Option<&'a str>,
    status: Option<OrderStatus>,
    line_items: serde_json::Value,
    applied_discounts: serde_json::Value,
    customer_snapshot: Option<serde_json::Value>,
    fulfillment_details: Option<serde_json::Value>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    created_by: Option<&'a str>,
    session_id: Option<Uuid>,
}

impl<'a> InsertRow<'a> {
    fn new(order: &'a NewOrder) -> Result<Self, StoreError> {
        let json = |v: serde_json::Result<serde_json::Value>| {
            v.map_err(|e| StoreError::Other(Box::new(e)))
        };
        Ok(Self {
            id: order.id,
            store_number: order.store_number,
            order_number: &order.order_number,
            customer_id: order.customer_id.as_deref(),
            fulfillment_type: order.fulfillment_type,
            fulfillment_date: order.fulfillment_date,
            reservation_id: order.reservation_id,
            subtotal: &order.subtotal,
            discount_total: order.discount_total.as_ref(),
            tax_total: order.tax_total.as_ref(),
            fulfillment_cost: order.fulfillment_cost.as_ref(),
            grand_total: &order.grand_total,
            payment_status: order.payment_status,
            payment_method: order.payment_method.as_deref(),
            payment_reference: order.payment_reference.as_deref(),
            status: order.status,
            line_items: json(serde_json::to_value(&order.line_items))?,
            applied_discounts: json(serde_json::to_value(&order.applied_discounts))?,
            customer_snapshot: order
                .customer_snapshot
                .as_ref()
                .map(|v| json(serde_json::to_value(v)))
                .transpose()?,
            fulfillment_details: order
                .fulfillment_details
                .as_ref()
                .map(|v| json(serde_json::to_value(v)))
                .transpose()?,
            created_at: order.created_at,
            updated_at: order.updated_at,
            created_by: order.created_by.as_deref(),
            session_id: order.session_id,
        })
    }
}

/// Inserts the orders that are not stored yet, keyed by id, in one transaction: one
/// multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING id` per 1,000 orders and at most one
/// follow-up query for the rows it skipped. Returns one outcome per input order, in order.
///
/// An order that cannot be stored (a value that does not fit, an order number held by another
/// id) is rejected alone; the rest of the batch commits. An `Err` means nothing was committed
/// and the whole call may be retried.
pub async fn insert_if_absent(
    conn: &mut AsyncPgConnection,
    batch: &[NewOrder],
) -> Result<Vec<InsertOutcome>, StoreError> {
    let mut outcomes: Vec<Option<InsertOutcome>> = vec![None; batch.len()];
    let mut first_index_of: HashMap<Uuid, usize> = HashMap::with_capacity(batch.len());
    let mut rows = Vec::with_capacity(batch.len());
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
        rows.push(InsertRow::new(order)?);
    }

    let (inserted, present) = conn
        .transaction::<_, StoreError, _>(async |conn| {
            let mut inserted = HashSet::with_capacity(rows.len());
            for chunk in rows.chunks(INSERT_CHUNK) {
                let ids: Vec<Uuid> = diesel::insert_into(orders::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .returning(orders::id)
                    .get_results(conn)
                    .await?;
                inserted.extend(ids);
            }
            let skipped: Vec<Uuid> = rows
                .iter()
                .map(|r| r.id)
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

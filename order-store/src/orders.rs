//! Every SQL statement on `orders`. Functions take `&mut AsyncPgConnection` so that callers
//! decide what runs in one transaction; the lookups of one order are one statement each and
//! take `&AsyncPgConnection`, so that concurrent callers can share a connection (diesel-async
//! pipelines statements sent through shared references).

use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::{FieldError, StoreError};
use crate::models::{Order, OrderStatus};
use crate::schema::orders;

mod change;
mod insert;

use change::{previous_status, status_kept, updated_after_lock, LockedFirst};
pub use change::{Change, Changed};
pub use insert::{insert_if_absent, InsertOutcome, Rejection, RejectionKind};

pub async fn find_by_id(conn: &AsyncPgConnection, id: Uuid) -> Result<Option<Order>, StoreError> {
    Ok(orders::table
        .find(id)
        .select(Order::as_select())
        .first(&mut { conn })
        .await
        .optional()?)
}

pub async fn find_by_order_number(
    conn: &AsyncPgConnection,
    order_number: &str,
) -> Result<Option<Order>, StoreError> {
    Ok(orders::table
        .filter(orders::order_number.eq(order_number))
        .select(Order::as_select())
        .first(&mut { conn })
        .await
        .optional()?)
}

/// Which orders a listing or search covers; every field present narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    pub store_number: Option<i32>,
    pub customer_id: Option<String>,
    pub status: Option<OrderStatus>,
    /// Inclusive lower bound on `createdAt`.
    pub created_from: Option<DateTime<Utc>>,
    /// Inclusive upper bound on `createdAt`.
    pub created_to: Option<DateTime<Utc>>,
}

/// Position after the last order of a page, for reading on without OFFSET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl From<&Order> for Cursor {
    fn from(order: &Order) -> Self {
        Self {
            created_at: order.created_at,
            id: order.id,
        }
    }
}

fn filtered(filter: &OrderFilter) -> orders::BoxedQuery<'_, diesel::pg::Pg> {
    let mut query = orders::table.into_boxed();
    if let Some(store) = filter.store_number {
        query = query.filter(orders::store_number.eq(store));
    }
    if let Some(customer) = &filter.customer_id {
        query = query.filter(orders::customer_id.eq(customer));
    }
    if let Some(status) = filter.status {
        query = query.filter(orders::status.eq(status));
    }
    if let Some(from) = filter.created_from {
        query = query.filter(orders::created_at.ge(from));
    }
    if let Some(to) = filter.created_to {
        query = query.filter(orders::created_at.le(to));
    }
    query
}

/// Orders matching `filter`, newest `createdAt` first with the id as tie-break, so that pages
/// are stable. `after` continues from a previous page's last order (keyset paging); `offset`
/// skips that many more.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &OrderFilter,
    after: Option<Cursor>,
    offset: i64,
    limit: i64,
) -> Result<Vec<Order>, StoreError> {
    Ok(page(filter, after, offset, limit)
        .select(Order::as_select())
        .load(conn)
        .await?)
}

/// The rows of [`list`], before the selection.
fn page(
    filter: &OrderFilter,
    after: Option<Cursor>,
    offset: i64,
    limit: i64,
) -> orders::BoxedQuery<'_, diesel::pg::Pg> {
    let mut query = filtered(filter);
    if let Some(cursor) = after {
        // A row comparison, which the (…, created_at DESC, id DESC) indexes answer directly.
        query = query.filter(
            sql::<Bool>("(orders.created_at, orders.id) < (")
                .bind::<Timestamptz, _>(cursor.created_at)
                .sql(", ")
                .bind::<diesel::sql_types::Uuid, _>(cursor.id)
                .sql(")"),
        );
    }
    query
        .order((orders::created_at.desc(), orders::id.desc()))
        .offset(offset)
        .limit(limit)
}

pub async fn count(conn: &mut AsyncPgConnection, filter: &OrderFilter) -> Result<i64, StoreError> {
    Ok(filtered(filter).count().get_result(conn).await?)
}

/// One page of a search and the number of orders matching it in all.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    pub orders: Vec<Order>,
    pub total_count: i64,
}

/// A page of `list` with its total count, read in one snapshot so that the count and the page
/// agree: one statement, the page's rows each carrying the count as an uncorrelated scalar
/// subquery (evaluated once), so a search is one round trip instead of four (BEGIN, page,
/// count, COMMIT). A page past the end has no row to carry the count; only then, and only
/// past the first page (an empty first page means no match at all), are page and count read
/// apart, in one repeatable-read snapshot.
pub async fn search(
    conn: &mut AsyncPgConnection,
    filter: &OrderFilter,
    offset: i64,
    limit: i64,
) -> Result<SearchPage, StoreError> {
    let total = filtered(filter).count().single_value();
    let rows: Vec<(Order, Option<i64>)> = page(filter, None, offset, limit)
        .select((Order::as_select(), total))
        .load(conn)
        .await?;
    let total_count = match rows.as_slice().first() {
        Some((_, total)) => total.unwrap_or_default(),
        None if offset == 0 => 0,
        None => return search_in_snapshot(conn, filter, offset, limit).await,
    };
    Ok(SearchPage {
        orders: rows.into_iter().map(|(order, _)| order).collect(),
        total_count,
    })
}

/// [`search`] as two statements in one read-only repeatable-read transaction.
async fn search_in_snapshot(
    conn: &mut AsyncPgConnection,
    filter: &OrderFilter,
    offset: i64,
    limit: i64,
) -> Result<SearchPage, StoreError> {
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run::<_, StoreError, _>(async |conn| {
            let orders = list(conn, filter, None, offset, limit).await?;
            let total_count = count(conn, filter).await?;
            Ok(SearchPage {
                orders,
                total_count,
            })
        })
        .await
}

async fn current_status(conn: &mut AsyncPgConnection, id: Uuid) -> Result<OrderStatus, StoreError> {
    orders::table
        .find(id)
        .select(orders::status)
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| not_found(id))
}

fn not_found(id: Uuid) -> StoreError {
    StoreError::NotFound(id)
}

fn required(field: &str, value: &str) -> Result<(), StoreError> {
    FieldError::required(field, Some(value))
        .map(|_| ())
        .map_err(|e| StoreError::Validation(vec![e]))
}

/// `fulfillment_details`, or the details an order without them starts from (the order's own
/// fulfillment type, everything else null).
const DETAILS_OR_DEFAULT: &str = "COALESCE(orders.fulfillment_details, jsonb_build_object(\
     'type', orders.fulfillment_type, 'scheduledDate', NULL, 'deliveryAddress', NULL, \
     'pickupLocation', NULL, 'instructions', NULL))";

/// SQL for the details with `$note` appended to `instructions` (newline-separated),
/// evaluated against the row being updated so that concurrent appends all survive.
macro_rules! details_with_note {
    ($note:expr) => {{
        let note: String = $note;
        sql::<Nullable<Jsonb>>(&format!(
            "jsonb_set({DETAILS_OR_DEFAULT}, '{{instructions}}', to_jsonb(CASE \
             WHEN COALESCE(orders.fulfillment_details->>'instructions', '') = '' THEN "
        ))
        .bind::<Text, _>(note.clone())
        .sql(" ELSE (orders.fulfillment_details->>'instructions') || E'\\n' || ")
        .bind::<Text, _>(note)
        .sql(" END))")
    }};
}

/// Runs one `UPDATE … RETURNING` of an order: the order as updated, or `None` when the
/// statement's filter matched no row (no such order, or a compare-and-set that lost).
async fn updated_order<'q, Q>(
    conn: &mut AsyncPgConnection,
    update: Q,
) -> Result<Option<Order>, StoreError>
where
    Q: diesel_async::methods::LoadQuery<'q, AsyncPgConnection, Order> + 'q,
{
    Ok(update.get_result(conn).await.optional()?)
}

/// Moves the order to `to` if the transition rules allow it from its current status, as one
/// compare-and-set `UPDATE ... WHERE id = $1 AND status = ANY($predecessors)`. Two concurrent
/// changes are serialised by the row lock: the second sees the first's result and is judged
/// against it, so no change is ever lost or applied from a stale status.
pub async fn update_status(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    to: OrderStatus,
) -> Result<Changed, StoreError> {
    let updated = updated_after_lock(
        conn,
        LockedFirst {
            id,
            update: diesel::update(
                orders::table
                    .find(id)
                    .filter(orders::status.eq_any(OrderStatus::predecessors(to)))
                    .filter(previous_status().is_not_null()),
            )
            .set((
                orders::status.eq(to),
                orders::updated_at.eq(diesel::dsl::now),
            ))
            .returning((Order::as_returning(), previous_status())),
        },
    )
    .await?;
    match updated {
        Some((order, previous_status)) => Ok(Changed {
            change: Change::StatusChanged,
            previous_status,
            order,
        }),
        None => Err(StoreError::InvalidTransition {
            from: current_status(conn, id).await?,
            to,
        }),
    }
}

/// Cancels the order (from CREATED, PAID or PROCESSING) and records the reason as a note in
/// `fulfillmentDetails.instructions`, in one compare-and-set statement.
pub async fn cancel(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    reason: &str,
) -> Result<Changed, StoreError> {
    required("reason", reason)?;
    let updated = updated_after_lock(
        conn,
        LockedFirst {
            id,
            update: diesel::update(
                orders::table
                    .find(id)
                    .filter(
                        orders::status.eq_any(OrderStatus::predecessors(OrderStatus::Cancelled)),
                    )
                    .filter(previous_status().is_not_null()),
            )
            .set((
                orders::status.eq(OrderStatus::Cancelled),
                orders::fulfillment_details
                    .eq(details_with_note!(format!("Cancelled: {}", reason.trim()))),
                orders::updated_at.eq(diesel::dsl::now),
            ))
            .returning((Order::as_returning(), previous_status())),
        },
    )
    .await?;
    match updated {
        Some((order, previous_status)) => Ok(Changed {
            change: Change::Cancelled,
            previous_status,
            order,
        }),
        None => Err(StoreError::CannotCancel(current_status(conn, id).await?)),
    }
}

/// Fields of `updateFulfillment`; at least one must be present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FulfillmentUpdate {
    /// Sets `fulfillmentDetails.scheduledDate` and the order's `fulfillmentDate`.
    pub fulfillment_date: Option<DateTime<Utc>>,
    pub pickup_location: Option<String>,
    pub instructions: Option<String>,
}

/// Merges `update` into the order's fulfillment details (creating them when absent) with one
/// `UPDATE ... SET fulfillment_details = details || patch`, so fields that another writer set
/// in the meantime are kept.
pub async fn update_fulfillment(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    update: &FulfillmentUpdate,
) -> Result<Changed, StoreError> {
    let mut patch = serde_json::Map::new();
    if let Some(date) = update.fulfillment_date {
        patch.insert(
            "scheduledDate".into(),
            crate::models::instant::format(&date).into(),
        );
    }
    if let Some(location) = &update.pickup_location {
        patch.insert("pickupLocation".into(), location.clone().into());
    }
    if let Some(instructions) = &update.instructions {
        patch.insert("instructions".into(), instructions.clone().into());
    }
    if patch.is_empty() {
        return Err(StoreError::EmptyFulfillmentUpdate);
    }
    let details = sql::<Nullable<Jsonb>>(&format!("{DETAILS_OR_DEFAULT} || "))
        .bind::<Jsonb, _>(serde_json::Value::Object(patch));
    let fulfillment_date = sql::<Nullable<Timestamptz>>("COALESCE(")
        .bind::<Nullable<Timestamptz>, _>(update.fulfillment_date)
        .sql(", orders.fulfillment_date)");
    let update = diesel::update(orders::table.find(id))
        .set((
            orders::fulfillment_details.eq(details),
            orders::fulfillment_date.eq(fulfillment_date),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Order::as_returning());
    updated_order(conn, update)
        .await?
        .map(|order| status_kept(Change::FulfillmentUpdated, order))
        .ok_or_else(|| not_found(id))
}

/// Appends `note` to `fulfillmentDetails.instructions` (newline-separated) atomically.
pub async fn append_note(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    note: &str,
) -> Result<Changed, StoreError> {
    required("note", note)?;
    let update = diesel::update(orders::table.find(id))
        .set((
            orders::fulfillment_details.eq(details_with_note!(note.to_owned())),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Order::as_returning());
    updated_order(conn, update)
        .await?
        .map(|order| status_kept(Change::NoteAdded, order))
        .ok_or_else(|| not_found(id))
}

/// Whether the database answers a trivial query (readiness probes).
pub async fn ping(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
        .get_result::<i32>(conn)
        .await?;
    Ok(())
}

/// One keyset page of a table shaped like `orders`, lowest id first: the orders whose id is
/// greater than `after` (from the start when `None`). Used by `order-ingest backfill` to copy
/// checkout's `orders` table without OFFSET, so each page costs the same however deep it is.
pub async fn page_by_id(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Order>, StoreError> {
    let mut query = orders::table.into_boxed();
    if let Some(after) = after {
        query = query.filter(orders::id.gt(after));
    }
    Ok(query
        .order(orders::id.asc())
        .limit(limit)
        .select(Order::as_select())
        .load(conn)
        .await?)
}

//! One function per operation, shared by REST and GraphQL: validated input in, one timed
//! database call, `ApiError` out. The transports only parse their input and render the result.
//! Reads go through [`Db::read`] (the replica when it can serve them), changes through
//! [`Db::write`] (the primary).

use order_store::orders::{self, Cursor, FulfillmentUpdate, OrderFilter};
use order_store::{outbox, AsyncConnection as _, Order, OrderStatus, StoreError};
use uuid::Uuid;

use crate::db::Db;
use crate::error::ApiError;
use crate::validate::{SearchQuery, Window};

/// `GET /orders/{orderId}`, `order(id)`.
pub async fn get(db: &Db, id: Uuid) -> Result<Option<Order>, ApiError> {
    db.read("SELECT", async |conn| orders::find_by_id(conn, id).await)
        .await
}

/// `GET /orders/number/{orderNumber}`, `orderByNumber`.
pub async fn by_number(db: &Db, number: &str) -> Result<Option<Order>, ApiError> {
    db.read("SELECT", async |conn| {
        orders::find_by_order_number(conn, number).await
    })
    .await
}

/// A page of the orders matching `filter`, newest first; `after` continues from a previous
/// page's last order.
pub async fn list(
    db: &Db,
    filter: &OrderFilter,
    after: Option<Cursor>,
    window: Window,
) -> Result<Vec<Order>, ApiError> {
    db.read("SELECT", async |conn| {
        orders::list(conn, filter, after, window.offset, window.limit).await
    })
    .await
}

/// One page of a search, its total, and whether more pages follow.
#[derive(Debug)]
pub struct SearchResult {
    pub orders: Vec<Order>,
    pub total_count: i64,
    pub has_more: bool,
}

/// `GET /orders?...`, `searchOrders`. With neither a store nor a customer the result is
/// empty, as the existing service answers.
pub async fn search(db: &Db, query: &SearchQuery) -> Result<SearchResult, ApiError> {
    let Window { offset, limit } = query.window;
    if query.filter.store_number.is_none() && query.filter.customer_id.is_none() {
        return Ok(SearchResult {
            orders: Vec::new(),
            total_count: 0,
            has_more: false,
        });
    }
    let found = db
        .read("SELECT", async |conn| {
            orders::search(conn, &query.filter, offset, limit).await
        })
        .await?;
    // hasMore = (page + 1) × size < totalCount with page = offset / size.
    let page = offset / limit;
    Ok(SearchResult {
        has_more: page.saturating_add(1).saturating_mul(limit) < found.total_count,
        total_count: found.total_count,
        orders: found.orders,
    })
}

/// One of the four changes an order can be given.
enum Edit<'a> {
    Status(OrderStatus),
    Fulfillment(&'a FulfillmentUpdate),
    Cancel(&'a str),
    Note(&'a str),
}

/// Applies `edit` to order `id` and records its `OrderUpdated` event in the outbox, in one
/// transaction: the event exists exactly when the change committed, and a refused change (its
/// error) rolls back and writes nothing. The event carries the trace context of the caller's
/// span. Redis is never involved: publishing is the relay's job, after the commit.
async fn committed(db: &Db, id: Uuid, edit: Edit<'_>) -> Result<Order, ApiError> {
    let traceparent = order_store::runtime::telemetry::current_traceparent();
    db.write("UPDATE", async |conn| {
        conn.transaction(async |conn| {
            let changed = match edit {
                Edit::Status(to) => orders::update_status(conn, id, to).await,
                Edit::Fulfillment(update) => orders::update_fulfillment(conn, id, update).await,
                Edit::Cancel(reason) => orders::cancel(conn, id, reason).await,
                Edit::Note(note) => orders::append_note(conn, id, note).await,
            }?;
            outbox::record(conn, &changed, traceparent.as_deref()).await?;
            Ok::<_, StoreError>(changed.order)
        })
        .await
    })
    .await
}

/// `PATCH /orders/{orderId}/status`, `updateOrderStatus`.
pub async fn update_status(db: &Db, id: Uuid, status: OrderStatus) -> Result<Order, ApiError> {
    committed(db, id, Edit::Status(status)).await
}

/// `PATCH /orders/{orderId}/fulfillment`, `updateFulfillment`.
pub async fn update_fulfillment(
    db: &Db,
    id: Uuid,
    update: &FulfillmentUpdate,
) -> Result<Order, ApiError> {
    committed(db, id, Edit::Fulfillment(update)).await
}

/// `POST /orders/{orderId}/cancel`, `cancelOrder`.
pub async fn cancel(db: &Db, id: Uuid, reason: &str) -> Result<Order, ApiError> {
    committed(db, id, Edit::Cancel(reason)).await
}

/// `POST /orders/{orderId}/notes`, `addOrderNote`.
pub async fn add_note(db: &Db, id: Uuid, note: &str) -> Result<Order, ApiError> {
    committed(db, id, Edit::Note(note)).await
}

/// Why this instance should not get traffic now, if it should not: the one check behind
/// `/health/ready`, `/actuator/health` and `/actuator/health/readiness`.
pub async fn unready_reason(state: &crate::AppState) -> Option<&'static str> {
    if state.is_draining() {
        Some("shutting down")
    } else if database_ready(&state.db).await {
        None
    } else {
        Some("database unreachable")
    }
}

/// Whether the database answers within the readiness timeout.
async fn database_ready(db: &Db) -> bool {
    let check = async {
        let mut conn = db.pool().get_owned().await?;
        orders::ping(&mut conn).await
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            false
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            false
        }
    }
}

/// How long the readiness check waits for the database.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

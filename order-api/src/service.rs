//! The domain rules REST and GraphQL share beyond single store calls: what a search without
//! a store or customer answers and whether more pages follow, a change applied together with
//! its outbox event, and when the instance is ready for traffic. Plain reads go straight to
//! [`Db::read`] (the replica when it can serve them) from the transports.

use order_store::orders::{self, FulfillmentUpdate};
use order_store::{outbox, AsyncConnection as _, Order, OrderStatus, StoreError};
use uuid::Uuid;

use crate::db::Db;
use crate::error::ApiError;
use crate::validate::{SearchQuery, Window};

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
pub enum Edit<'a> {
    Status(OrderStatus),
    Fulfillment(&'a FulfillmentUpdate),
    Cancel(&'a str),
    Note(&'a str),
}

/// Applies `edit` to order `id` and records its `OrderUpdated` event in the outbox, in one
/// transaction: the event exists exactly when the change committed, and a refused change (its
/// error) rolls back and writes nothing. The event carries the trace context of the caller's
/// span. Redis is never involved: publishing is the relay's job, after the commit.
pub async fn apply(db: &Db, id: Uuid, edit: Edit<'_>) -> Result<Order, ApiError> {
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

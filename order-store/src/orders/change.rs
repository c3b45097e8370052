//! What a committed change returns: the order after it, and its status just before it, read
//! under the same row lock in the same statement.

use diesel::dsl::sql;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::error::StoreError;
use crate::models::{Order, OrderStatus};

/// The kind of a change, as `data.change` of its `OrderUpdated` event names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Change {
    StatusChanged,
    FulfillmentUpdated,
    Cancelled,
    NoteAdded,
}

/// A change as it committed (or will, with its transaction).
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    pub change: Change,
    /// The status the order had just before this change.
    pub previous_status: OrderStatus,
    /// The order after the change.
    pub order: Order,
}

/// Name of the common table expression that [`LockedFirst`] adds; the update refers to it.
const PREVIOUS: &str = "previous";

/// An `UPDATE orders … RETURNING` preceded by
/// `WITH previous AS MATERIALIZED (SELECT status FROM orders WHERE id = $1 FOR UPDATE)`.
///
/// The `FOR UPDATE` read waits for any transaction holding the row and then returns the row's
/// latest committed status, and from then on this transaction holds the lock: the status it
/// read is the one the update changes, whatever ran concurrently, at no extra round trip. The
/// update must reference `previous` in its `WHERE` clause, so that PostgreSQL evaluates the
/// locking read before it modifies the row (a read after the row was modified by the same
/// statement would find nothing); `RETURNING` then reads the materialized result.
pub(super) struct LockedFirst<U> {
    pub(super) id: Uuid,
    pub(super) update: U,
}

impl<U: QueryFragment<Pg>> QueryFragment<Pg> for LockedFirst<U> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH ");
        out.push_sql(PREVIOUS);
        out.push_sql(" AS MATERIALIZED (SELECT status FROM orders WHERE id = ");
        out.push_bind_param::<diesel::sql_types::Uuid, _>(&self.id)?;
        out.push_sql(" FOR UPDATE) ");
        self.update.walk_ast(out.reborrow())
    }
}

impl<U: Query> Query for LockedFirst<U> {
    type SqlType = U::SqlType;
}

impl<U> QueryId for LockedFirst<U> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

/// Runs one `UPDATE … RETURNING` of an order under [`LockedFirst`]: the order as updated and its
/// status just before, or `None` when the statement's filter matched no row (no such order, or
/// a compare-and-set that lost).
pub(super) async fn updated_after_lock<'q, Q>(
    conn: &mut AsyncPgConnection,
    update: LockedFirst<Q>,
) -> Result<Option<(Order, OrderStatus)>, StoreError>
where
    LockedFirst<Q>:
        diesel_async::methods::LoadQuery<'q, AsyncPgConnection, (Order, OrderStatus)> + 'q,
{
    Ok(update.get_result(conn).await.optional()?)
}

/// `status` of the row as [`LockedFirst`] read it; referenced in the update's filter so that the
/// locking read runs first.
pub(super) fn previous_status() -> diesel::expression::SqlLiteral<Text> {
    sql::<Text>(&format!("(SELECT status FROM {PREVIOUS})"))
}

/// A change that leaves the status as it is: the row lock its `UPDATE` takes keeps the status
/// returned with the order equal to the one before.
pub(super) fn status_kept(change: Change, order: Order) -> Changed {
    Changed {
        change,
        previous_status: order.status,
        order,
    }
}

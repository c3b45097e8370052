//! The root fields: each checks its scope, parses its arguments with the shared rules, and
//! runs the same store call or service rule as its REST twin.

use async_graphql::{Context, Object, Result, ID};
use order_store::orders::{self, OrderFilter};

use super::types::{
    GqlOrder, GqlOrderStatus, OrderSearchInput, OrderSearchResult, UpdateFulfillmentInput,
};
use super::{api_error, require};
use crate::auth::{READ_SCOPE, WRITE_SCOPE};
use crate::db::Db;
use crate::error::ApiError;
use crate::service::{self, Edit};
use crate::streaming::page;
use crate::validate::{self, Collect, Field, Skip};

/// `ordersByCustomer` has no paging arguments; it answers at most this many, newest first.
pub const MAX_CUSTOMER_ORDERS: i64 = 1000;
const DEFAULT_LIMIT: i64 = 50;

fn db<'a>(ctx: &Context<'a>) -> Result<&'a Db> {
    ctx.data::<Db>()
        .map_err(|e| api_error(&ApiError::Internal(e.message.into())))
}

/// Scope check, then the operation, with every failure rendered in one way.
async fn run<T>(
    ctx: &Context<'_>,
    scope: &'static str,
    op: impl AsyncFnOnce(&Db) -> Result<T, ApiError>,
) -> Result<T> {
    require(ctx, scope)?;
    op(db(ctx)?).await.map_err(|e| api_error(&e))
}

fn limit(limit: Option<i32>) -> Field<i64> {
    validate::int_in(
        "limit",
        limit.map(i64::from),
        1..=100,
        DEFAULT_LIMIT,
        validate::PAGE_SIZE,
    )
}

fn offset(offset: Option<i32>) -> Field<i64> {
    validate::int_in(
        "offset",
        offset.map(i64::from),
        0..=i64::MAX,
        0,
        validate::NOT_NEGATIVE,
    )
}

fn order_id(id: &ID) -> Field<uuid::Uuid> {
    validate::order_id("id", Some(id.as_str()))
}

fn orders_of(list: Vec<order_store::Order>) -> Vec<GqlOrder> {
    list.into_iter().map(GqlOrder).collect()
}

pub struct Query;

#[Object(name = "Query")]
impl Query {
    /// The order, or null when there is none with this id.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> Result<Option<GqlOrder>> {
        run(ctx, READ_SCOPE, async |db| {
            let (id,) = (order_id(&id),).collect()?;
            let order = db
                .read_statement("SELECT", async |conn| orders::find_by_id(conn, id).await)
                .await?;
            Ok(order.map(GqlOrder))
        })
        .await
    }

    /// The order with this order number, or null.
    async fn order_by_number(
        &self,
        ctx: &Context<'_>,
        order_number: String,
    ) -> Result<Option<GqlOrder>> {
        run(ctx, READ_SCOPE, async |db| {
            let (number,) = (validate::required(
                "orderNumber",
                Some(&order_number),
                validate::MAX_ORDER_NUMBER,
            ),)
                .collect()?;
            let order = db
                .read_statement("SELECT", async |conn| {
                    orders::find_by_order_number(conn, &number).await
                })
                .await?;
            Ok(order.map(GqlOrder))
        })
        .await
    }

    /// A page of the store's orders, newest first, optionally of one status.
    async fn orders(
        &self,
        ctx: &Context<'_>,
        store_number: i32,
        status: Option<GqlOrderStatus>,
        limit: Option<i32>,
        offset: Option<i32>,
    ) -> Result<Vec<GqlOrder>> {
        run(ctx, READ_SCOPE, async |db| {
            let (store_number, limit, offset) = (
                validate::store_number("storeNumber", i64::from(store_number)),
                self::limit(limit),
                self::offset(offset),
            )
                .collect()?;
            let filter = OrderFilter {
                store_number: Some(store_number),
                status: status.map(Into::into),
                ..OrderFilter::default()
            };
            Ok(orders_of(page(db, &filter, None, offset, limit).await?))
        })
        .await
    }

    /// The customer's orders, newest first (at most `MAX_CUSTOMER_ORDERS`).
    async fn orders_by_customer(
        &self,
        ctx: &Context<'_>,
        customer_id: String,
    ) -> Result<Vec<GqlOrder>> {
        run(ctx, READ_SCOPE, async |db| {
            let (customer_id,) = (validate::required(
                "customerId",
                Some(&customer_id),
                validate::MAX_CUSTOMER_ID,
            ),)
                .collect()?;
            let filter = OrderFilter {
                customer_id: Some(customer_id),
                ..OrderFilter::default()
            };
            let list = page(db, &filter, None, 0, MAX_CUSTOMER_ORDERS).await?;
            Ok(orders_of(list))
        })
        .await
    }

    /// Honours every input, `customerId` and `status` included.
    async fn search_orders(
        &self,
        ctx: &Context<'_>,
        input: OrderSearchInput,
    ) -> Result<OrderSearchResult> {
        run(ctx, READ_SCOPE, async |db| {
            let query = validate::search_query(
                validate::store_number("storeNumber", i64::from(input.store_number)).map(Some),
                validate::optional_filter(
                    "customerId",
                    input.customer_id.as_deref(),
                    validate::MAX_CUSTOMER_ID,
                ),
                Ok(input.status.map(Into::into)),
                validate::optional_instant("startDate", input.start_date.as_deref()),
                validate::optional_instant("endDate", input.end_date.as_deref()),
                offset(input.offset),
                limit(input.limit),
                Skip::Orders,
            )?;
            let found = service::search(db, &query).await?;
            Ok(OrderSearchResult {
                has_more: found.has_more,
                total_count: i32::try_from(found.total_count).unwrap_or(i32::MAX),
                orders: orders_of(found.orders),
            })
        })
        .await
    }
}

pub struct Mutation;

#[Object(name = "Mutation")]
impl Mutation {
    async fn update_order_status(
        &self,
        ctx: &Context<'_>,
        id: ID,
        status: GqlOrderStatus,
    ) -> Result<Option<GqlOrder>> {
        run(ctx, WRITE_SCOPE, async |db| {
            let (id,) = (order_id(&id),).collect()?;
            let order = service::apply(db, id, Edit::Status(status.into())).await?;
            Ok(Some(GqlOrder(order)))
        })
        .await
    }

    async fn update_fulfillment(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateFulfillmentInput,
    ) -> Result<Option<GqlOrder>> {
        run(ctx, WRITE_SCOPE, async |db| {
            let any_given = input.fulfillment_date.is_some()
                || input.pickup_location.is_some()
                || input.instructions.is_some();
            let (id, update) = validate::fulfillment_update(
                order_id(&id),
                validate::optional_instant("fulfillmentDate", input.fulfillment_date.as_deref()),
                validate::optional_text(
                    "pickupLocation",
                    input.pickup_location.as_deref(),
                    validate::MAX_TEXT,
                ),
                validate::optional_text(
                    "instructions",
                    input.instructions.as_deref(),
                    validate::MAX_TEXT,
                ),
                any_given,
            )?;
            let order = service::apply(db, id, Edit::Fulfillment(&update)).await?;
            Ok(Some(GqlOrder(order)))
        })
        .await
    }

    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> Result<Option<GqlOrder>> {
        run(ctx, WRITE_SCOPE, async |db| {
            let (id, reason) = validate::id_and_text(order_id(&id), "reason", Ok(Some(reason)))?;
            Ok(Some(GqlOrder(
                service::apply(db, id, Edit::Cancel(&reason)).await?,
            )))
        })
        .await
    }

    async fn add_order_note(
        &self,
        ctx: &Context<'_>,
        id: ID,
        note: String,
    ) -> Result<Option<GqlOrder>> {
        run(ctx, WRITE_SCOPE, async |db| {
            let (id, note) = validate::id_and_text(order_id(&id), "note", Ok(Some(note)))?;
            Ok(Some(GqlOrder(
                service::apply(db, id, Edit::Note(&note)).await?,
            )))
        })
        .await
    }
}

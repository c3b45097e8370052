//! The order resource's reads: `GET /orders` and below (the changes are in [`super::changes`]).
//! Each endpoint's [`Route`], its filter and its handler (typed query and body in, a store call, JSON out). Errors leave as [`ApiError`]
//! rejections and are answered in one place ([`crate::error::recover`]).

use order_store::orders::{self, OrderFilter};
use order_store::Order;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{json_response, query, read, with_reads, Route};
use crate::error::ApiError;
use crate::openapi::{schemas, ConsistencyToken, NotFound, OrderId, ReadErrors};
use crate::service;
use crate::validate::{self, Collect, Field, Skip};
use crate::{streaming, AppState};

/// A path segment with its percent-escapes decoded (warp hands segments over raw); bytes that
/// are not UTF-8 become U+FFFD, which then fails validation instead of the request.
pub fn decode_path(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// The route of [`order_by_id()`].
pub const BY_ID: Route = Route::get("/orders/{orderId}");

/// `GET /orders/{orderId}`
#[utoipa::path(
    get,
    path = BY_ID.path,
    operation_id = "getOrder",
    summary = "One order by id",
    security(("bearerAuth" = ["order:read"])),
    params(OrderId, ConsistencyToken),
    responses((status = 200, description = "The order", body = schemas::Order), ReadErrors, NotFound)
)]
pub fn order_by_id(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String)
        .and(warp::get())
        .and(read(state))
        .and(with_reads(state))
        .and_then(get_order)
        .boxed()
}

/// Answers [`order_by_id`].
async fn get_order(id: String, state: AppState) -> Result<Response, Rejection> {
    let id = decode_path(&id);
    let (uuid,) = (validate::order_id("orderId", Some(&id)),).collect()?;
    match state
        .db
        .read_statement("SELECT", async |conn| orders::find_by_id(conn, uuid).await)
        .await?
    {
        Some(order) => Ok(json_response(&order)),
        None => Err(ApiError::OrderNotFound(id).into()),
    }
}

/// The route of [`order_by_number()`].
pub const BY_NUMBER: Route = Route::get("/orders/number/{orderNumber}");

/// `GET /orders/number/{orderNumber}`
#[utoipa::path(
    get,
    path = BY_NUMBER.path,
    operation_id = "getOrderByNumber",
    summary = "One order by order number",
    security(("bearerAuth" = ["order:read"])),
    params(
        ("orderNumber" = String, Path, min_length = 1, max_length = 50),
        ConsistencyToken,
    ),
    responses((status = 200, description = "The order", body = schemas::Order), ReadErrors, NotFound)
)]
pub fn order_by_number(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / "number" / String)
        .and(warp::get())
        .and(read(state))
        .and(with_reads(state))
        .and_then(get_order_by_number)
        .boxed()
}

/// Answers [`order_by_number`].
async fn get_order_by_number(number: String, state: AppState) -> Result<Response, Rejection> {
    let number = decode_path(&number);
    let (number,) = (validate::required(
        "orderNumber",
        Some(&number),
        validate::MAX_ORDER_NUMBER,
    ),)
        .collect()?;
    match state
        .db
        .read_statement("SELECT", async |conn| {
            orders::find_by_order_number(conn, &number).await
        })
        .await?
    {
        Some(order) => Ok(json_response(&order)),
        None => Err(ApiError::OrderNotFound(number).into()),
    }
}

/// `?limit=&offset=` of the array endpoints: without `limit`, every order. Read as text and
/// validated in [`ListParams::window`], so that a bad value gets the field's own message; the
/// types and bounds given to the document are those the validation enforces.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Most orders to return (default: all)
    #[param(value_type = i64, required = false, minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    limit: Option<String>,
    /// Orders to skip
    #[param(value_type = i64, required = false, minimum = 0, maximum = 9_223_372_036_854_775_807_i64, default = 0)]
    offset: Option<String>,
}

impl ListParams {
    fn window(&self) -> (Field<Option<i64>>, Field<i64>) {
        let limit = self
            .limit
            .as_deref()
            .map(|l| validate::int_text_in("limit", Some(l), 1..=i64::MAX, 1, validate::POSITIVE))
            .transpose();
        let offset = validate::int_text_in(
            "offset",
            self.offset.as_deref(),
            0..=i64::MAX,
            0,
            validate::NOT_NEGATIVE,
        );
        (limit, offset)
    }
}

/// The route of [`orders_by_store()`].
pub const BY_STORE: Route = Route::get("/orders/store/{storeNumber}");

/// `GET /orders/store/{storeNumber}?limit=&offset=`
#[utoipa::path(
    get,
    path = BY_STORE.path,
    operation_id = "getOrdersByStore",
    summary = "The store's orders, newest first (streamed)",
    security(("bearerAuth" = ["order:read"])),
    params(
        ("storeNumber" = i32, Path, minimum = 1, maximum = 2000),
        ListParams,
        ConsistencyToken,
    ),
    responses((status = 200, description = "The orders", body = Vec<schemas::Order>), ReadErrors)
)]
pub fn orders_by_store(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / "store" / String)
        .and(warp::get())
        .and(read(state))
        .and(query())
        .and(with_reads(state))
        .and_then(list_by_store)
        .boxed()
}

/// Answers [`orders_by_store`].
async fn list_by_store(
    store: String,
    params: ListParams,
    state: AppState,
) -> Result<Response, Rejection> {
    let store = validate::store_number_text("storeNumber", &decode_path(&store));
    let (limit, offset) = params.window();
    let (store, limit, offset) = (store, limit, offset).collect()?;
    let filter = OrderFilter {
        store_number: Some(store),
        ..OrderFilter::default()
    };
    Ok(streaming::orders_array(state.db.clone(), filter, offset, limit).await?)
}

/// The route of [`orders_by_customer()`].
pub const BY_CUSTOMER: Route = Route::get("/orders/customer/{customerId}");

/// `GET /orders/customer/{customerId}?limit=&offset=`
#[utoipa::path(
    get,
    path = BY_CUSTOMER.path,
    operation_id = "getOrdersByCustomer",
    summary = "The customer's orders, newest first (streamed)",
    security(("bearerAuth" = ["order:read"])),
    params(
        ("customerId" = String, Path, min_length = 1, max_length = 100),
        ListParams,
        ConsistencyToken,
    ),
    responses((status = 200, description = "The orders", body = Vec<schemas::Order>), ReadErrors)
)]
pub fn orders_by_customer(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / "customer" / String)
        .and(warp::get())
        .and(read(state))
        .and(query())
        .and(with_reads(state))
        .and_then(list_by_customer)
        .boxed()
}

/// Answers [`orders_by_customer`].
async fn list_by_customer(
    customer: String,
    params: ListParams,
    state: AppState,
) -> Result<Response, Rejection> {
    let customer = validate::required(
        "customerId",
        Some(&decode_path(&customer)),
        validate::MAX_CUSTOMER_ID,
    );
    let (limit, offset) = params.window();
    let (customer, limit, offset) = (customer, limit, offset).collect()?;
    let filter = OrderFilter {
        customer_id: Some(customer),
        ..OrderFilter::default()
    };
    Ok(streaming::orders_array(state.db.clone(), filter, offset, limit).await?)
}

/// `GET /orders` query parameters, read as text and validated in [`answer_search`]; the
/// types and bounds given to the document are those the validation enforces.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Store to search
    #[param(value_type = i32, required = false, minimum = 1, maximum = 2000)]
    store_number: Option<String>,
    /// Customer to search
    #[param(value_type = String, required = false, max_length = 100)]
    customer_id: Option<String>,
    /// Status name, case-insensitive
    #[param(value_type = schemas::OrderStatus, required = false)]
    status: Option<String>,
    /// Earliest createdAt (default: epoch)
    #[param(value_type = String, required = false, format = DateTime)]
    start_date: Option<String>,
    /// Latest createdAt (default: now)
    #[param(value_type = String, required = false, format = DateTime)]
    end_date: Option<String>,
    /// Page number
    #[param(value_type = i64, required = false, minimum = 0, maximum = 9_223_372_036_854_775_807_i64, default = 0)]
    page: Option<String>,
    /// Page size
    #[param(value_type = i32, required = false, minimum = 1, maximum = 100, default = 20)]
    size: Option<String>,
}

/// One page of `GET /orders`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SearchResult)]
pub struct SearchReply {
    #[schema(value_type = Vec<schemas::Order>)]
    orders: Vec<Order>,
    total_count: i64,
    page: i64,
    size: i64,
    has_more: bool,
}

/// The route of [`search()`].
pub const SEARCH: Route = Route::get("/orders");

/// `GET /orders?storeNumber=&customerId=&status=&startDate=&endDate=&page=&size=`
#[utoipa::path(
    get,
    path = SEARCH.path,
    operation_id = "searchOrders",
    summary = "Search orders (by store or customer), paged",
    security(("bearerAuth" = ["order:read"])),
    params(SearchParams, ConsistencyToken),
    responses(
        (
            status = 200,
            description = "One page of matching orders (empty without storeNumber and customerId)",
            body = SearchReply
        ),
        ReadErrors
    )
)]
pub fn search(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders")
        .and(warp::get())
        .and(read(state))
        .and(query())
        .and(with_reads(state))
        .and_then(answer_search)
        .boxed()
}

/// Answers [`search()`].
async fn answer_search(params: SearchParams, state: AppState) -> Result<Response, Rejection> {
    let page = validate::int_text_in(
        "page",
        params.page.as_deref(),
        0..=i64::MAX,
        0,
        validate::NOT_NEGATIVE,
    );
    let size = validate::int_text_in(
        "size",
        params.size.as_deref(),
        1..=100,
        20,
        validate::PAGE_SIZE,
    );
    let mut query = validate::search_query(
        params
            .store_number
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| validate::store_number_text("storeNumber", s))
            .transpose(),
        validate::optional_filter(
            "customerId",
            params.customer_id.as_deref(),
            validate::MAX_CUSTOMER_ID,
        ),
        validate::optional_status("status", params.status.as_deref()),
        validate::optional_instant("startDate", params.start_date.as_deref()),
        validate::optional_instant("endDate", params.end_date.as_deref()),
        page,
        size,
        Skip::Pages,
    )?;
    // The existing service searches up to "now" when no end is given.
    query.filter.created_to.get_or_insert_with(chrono::Utc::now);
    let found = service::search(&state.db, &query).await?;
    Ok(json_response(&SearchReply {
        orders: found.orders,
        total_count: found.total_count,
        page: query.window.offset / query.window.limit,
        size: query.window.limit,
        has_more: found.has_more,
    }))
}

//! The order resource: `/orders` and below. Each endpoint's [`Route`], its filter and its
//! handler (typed query and body in, a store call, JSON out). Errors leave as [`ApiError`]
//! rejections and are answered in one place ([`crate::error::recover`]).

use order_store::orders::{self, OrderFilter};
use order_store::Order;
use serde::{Deserialize, Deserializer, Serialize};
use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::body::json_body;
use super::{json_response, query, read, with_changes, with_reads, write, Route};
use crate::error::ApiError;
use crate::service::{self, Edit};
use crate::validate::{self, Collect, Field, Skip};
use crate::{streaming, AppState};

/// The reply to a successful change: the order, and the consistency token that lets the
/// client's next read see the change.
fn changed(order: &Order, state: &AppState) -> Response {
    let mut response = json_response(order);
    with_consistency_token(&mut response, state.db.consistency_token());
    response
}

/// Adds `token` as the `X-Consistency-Token` header.
pub fn with_consistency_token(response: &mut Response, token: Option<String>) {
    // An LSN's text is plain ASCII (hexadecimal digits and a slash): always a valid value.
    if let Some(value) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response
            .headers_mut()
            .insert(crate::replica::CONSISTENCY_HEADER, value);
    }
}

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
        .read("SELECT", async |conn| orders::find_by_id(conn, uuid).await)
        .await?
    {
        Some(order) => Ok(json_response(&order)),
        None => Err(ApiError::OrderNotFound(id).into()),
    }
}

/// The route of [`order_by_number()`].
pub const BY_NUMBER: Route = Route::get("/orders/number/{orderNumber}");

/// `GET /orders/number/{orderNumber}`
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
        .read("SELECT", async |conn| {
            orders::find_by_order_number(conn, &number).await
        })
        .await?
    {
        Some(order) => Ok(json_response(&order)),
        None => Err(ApiError::OrderNotFound(number).into()),
    }
}

/// `?limit=&offset=` of the array endpoints: without `limit`, every order.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    limit: Option<String>,
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

/// `GET /orders` query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchParams {
    store_number: Option<String>,
    customer_id: Option<String>,
    status: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    page: Option<String>,
    size: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SearchReply {
    orders: Vec<Order>,
    total_count: i64,
    page: i64,
    size: i64,
    has_more: bool,
}

/// The route of [`search()`].
pub const SEARCH: Route = Route::get("/orders");

/// `GET /orders?storeNumber=&customerId=&status=&startDate=&endDate=&page=&size=`
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

/// A body field meant to be a string, kept apart from other JSON types so that a wrong type
/// is reported as that field's error rather than as an unreadable body.
#[derive(Debug)]
pub enum Text {
    Given(String),
    NotAString,
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => Text::Given(s),
            _ => Text::NotAString,
        })
    }
}

/// An optional string field of a body (`null` is absent).
fn optional_text(field: &str, value: Option<&Text>) -> Field<Option<String>> {
    match value {
        None => Ok(None),
        Some(Text::Given(s)) => validate::optional_text(field, Some(s), validate::MAX_TEXT),
        Some(Text::NotAString) => Err(order_store::FieldError::new(field, validate::STRING)),
    }
}

/// `PATCH /orders/{orderId}/status` body.
#[derive(Debug, Deserialize)]
pub struct StatusBody {
    status: Option<Text>,
}

/// The route of [`update_status()`].
pub const UPDATE_STATUS: Route = Route::patch("/orders/{orderId}/status");

/// `PATCH /orders/{orderId}/status` `{ "status" }`
pub fn update_status(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "status")
        .and(warp::patch())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_changes(state))
        .and_then(answer_update_status)
        .boxed()
}

/// Answers [`update_status()`].
async fn answer_update_status(
    id: String,
    body: StatusBody,
    state: AppState,
) -> Result<Response, Rejection> {
    let status = match &body.status {
        Some(Text::NotAString) => Err(order_store::FieldError::new("status", validate::STATUS)),
        Some(Text::Given(s)) => validate::status("status", Some(s)),
        None => validate::status("status", None),
    };
    let (uuid, status) = (
        validate::order_id("orderId", Some(&decode_path(&id))),
        status,
    )
        .collect()?;
    let order = service::apply(&state.db, uuid, Edit::Status(status)).await?;
    Ok(changed(&order, &state))
}

/// `PATCH /orders/{orderId}/fulfillment` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FulfillmentBody {
    fulfillment_date: Option<Text>,
    pickup_location: Option<Text>,
    instructions: Option<Text>,
}

/// The route of [`update_fulfillment()`].
pub const UPDATE_FULFILLMENT: Route = Route::patch("/orders/{orderId}/fulfillment");

/// `PATCH /orders/{orderId}/fulfillment` `{ fulfillmentDate?, pickupLocation?, instructions? }`
pub fn update_fulfillment(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "fulfillment")
        .and(warp::patch())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_changes(state))
        .and_then(answer_update_fulfillment)
        .boxed()
}

/// Answers [`update_fulfillment()`].
async fn answer_update_fulfillment(
    id: String,
    body: FulfillmentBody,
    state: AppState,
) -> Result<Response, Rejection> {
    let date = optional_text("fulfillmentDate", body.fulfillment_date.as_ref())
        .and_then(|d| validate::optional_instant("fulfillmentDate", d.as_deref()));
    let pickup = optional_text("pickupLocation", body.pickup_location.as_ref());
    let instructions = optional_text("instructions", body.instructions.as_ref());
    let any_given = body.fulfillment_date.is_some()
        || body.pickup_location.is_some()
        || body.instructions.is_some();
    let (uuid, update) = validate::fulfillment_update(
        validate::order_id("orderId", Some(&decode_path(&id))),
        date,
        pickup,
        instructions,
        any_given,
    )?;
    let order = service::apply(&state.db, uuid, Edit::Fulfillment(&update)).await?;
    Ok(changed(&order, &state))
}

/// `POST /orders/{orderId}/cancel` body.
#[derive(Debug, Deserialize)]
pub struct CancelBody {
    reason: Option<Text>,
}

/// `POST /orders/{orderId}/notes` body.
#[derive(Debug, Deserialize)]
pub struct NoteBody {
    note: Option<Text>,
}

/// The order id and the one required text field of the cancel and notes bodies.
fn id_and_text(
    id: &str,
    field: &str,
    text: Option<&Text>,
) -> Result<(uuid::Uuid, String), ApiError> {
    validate::id_and_text(
        validate::order_id("orderId", Some(&decode_path(id))),
        field,
        optional_text(field, text),
    )
}

/// The route of [`cancel()`].
pub const CANCEL: Route = Route::post("/orders/{orderId}/cancel");

/// `POST /orders/{orderId}/cancel` `{ "reason" }`
pub fn cancel(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "cancel")
        .and(warp::post())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_changes(state))
        .and_then(answer_cancel)
        .boxed()
}

/// Answers [`cancel()`].
async fn answer_cancel(
    id: String,
    body: CancelBody,
    state: AppState,
) -> Result<Response, Rejection> {
    let (uuid, reason) = id_and_text(&id, "reason", body.reason.as_ref())?;
    let order = service::apply(&state.db, uuid, Edit::Cancel(&reason)).await?;
    Ok(changed(&order, &state))
}

/// The route of [`add_note()`].
pub const ADD_NOTE: Route = Route::post("/orders/{orderId}/notes");

/// `POST /orders/{orderId}/notes` `{ "note" }`
pub fn add_note(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "notes")
        .and(warp::post())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_changes(state))
        .and_then(answer_add_note)
        .boxed()
}

/// Answers [`add_note()`].
async fn answer_add_note(
    id: String,
    body: NoteBody,
    state: AppState,
) -> Result<Response, Rejection> {
    let (uuid, note) = id_and_text(&id, "note", body.note.as_ref())?;
    let order = service::apply(&state.db, uuid, Edit::Note(&note)).await?;
    Ok(changed(&order, &state))
}

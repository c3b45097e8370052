//! Thin handlers: parse and check the input, call the store, map the result. Errors leave as
//! [`ApiError`] rejections and are answered in one place ([`crate::error::recover`]).

use std::collections::HashMap;

use chrono::Utc;
use order_store::orders::{self, Cursor, FulfillmentUpdate, OrderFilter};
use order_store::Order;
use serde::Serialize;
use serde_json::{Map, Value};
use warp::http::{header, HeaderValue, StatusCode};
use warp::hyper::body::Bytes;
use warp::hyper::Body;
use warp::reply::{Reply, Response};
use warp::Rejection;

use crate::db::Db;
use crate::error::ApiError;
use crate::validate::{self, Checks};
use crate::AppState;

/// Rows per query when streaming an array: large enough to amortise the round trip, small
/// enough that memory stays flat whatever the result size.
pub const STREAM_CHUNK: i64 = 500;

type Query = HashMap<String, String>;

fn json_response(value: &impl Serialize) -> Response {
    warp::reply::json(value).into_response()
}

fn not_found(what: &str) -> ApiError {
    ApiError::NotFound(format!("Order not found: {what}"))
}

/// `GET /orders/{orderId}`
pub async fn get_order(id: String, state: AppState) -> Result<Response, Rejection> {
    let id = validate::decode_path(&id);
    let mut checks = Checks::new();
    let uuid = checks.uuid("orderId", &id);
    checks.finish()?;
    let Some(uuid) = uuid else {
        return Err(not_found(&id).into());
    };
    let db = &state.db;
    let mut conn = db.conn().await.map_err(ApiError::from)?;
    match db
        .timed(orders::find_by_id(&mut conn, uuid))
        .await
        .map_err(ApiError::from)?
    {
        Some(order) => Ok(json_response(&order)),
        None => Err(not_found(&id).into()),
    }
}

/// `GET /orders/number/{orderNumber}`
pub async fn get_order_by_number(number: String, state: AppState) -> Result<Response, Rejection> {
    let number = validate::decode_path(&number);
    let mut checks = Checks::new();
    let number = checks.required("orderNumber", Some(&number), 50);
    checks.finish()?;
    let number = number.unwrap_or_default();
    let db = &state.db;
    let mut conn = db.conn().await.map_err(ApiError::from)?;
    match db
        .timed(orders::find_by_order_number(&mut conn, &number))
        .await
        .map_err(ApiError::from)?
    {
        Some(order) => Ok(json_response(&order)),
        None => Err(not_found(&number).into()),
    }
}

/// `limit` (≥ 1, unbounded by default) and `offset` (≥ 0) of the array endpoints.
fn window(query: &Query, checks: &mut Checks) -> (Option<i64>, i64) {
    let limit = query
        .get("limit")
        .and_then(|text| checks.int_in("limit", Some(text), 1, i64::MAX, 1, validate::POSITIVE));
    let offset = checks
        .int_in(
            "offset",
            query.get("offset").map(String::as_str),
            0,
            i64::MAX,
            0,
            validate::NOT_NEGATIVE,
        )
        .unwrap_or(0);
    (limit, offset)
}

/// `GET /orders/store/{storeNumber}`
pub async fn list_by_store(
    store: String,
    query: Query,
    state: AppState,
) -> Result<Response, Rejection> {
    let mut checks = Checks::new();
    let store = checks.store_number_text("storeNumber", &validate::decode_path(&store));
    let (limit, offset) = window(&query, &mut checks);
    checks.finish()?;
    let filter = OrderFilter {
        store_number: store,
        ..OrderFilter::default()
    };
    Ok(stream_orders(state.db.clone(), filter, offset, limit).await?)
}

/// `GET /orders/customer/{customerId}`
pub async fn list_by_customer(
    customer: String,
    query: Query,
    state: AppState,
) -> Result<Response, Rejection> {
    let mut checks = Checks::new();
    let customer = checks.required("customerId", Some(&validate::decode_path(&customer)), 100);
    let (limit, offset) = window(&query, &mut checks);
    checks.finish()?;
    let filter = OrderFilter {
        customer_id: customer,
        ..OrderFilter::default()
    };
    Ok(stream_orders(state.db.clone(), filter, offset, limit).await?)
}

fn write_orders(buf: &mut Vec<u8>, orders: &[Order], mut first: bool) -> Result<(), ApiError> {
    for order in orders {
        if !first {
            buf.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut *buf, order).map_err(|e| ApiError::Internal(Box::new(e)))?;
    }
    Ok(())
}

/// The orders matching `filter` as one JSON array, read `STREAM_CHUNK` rows at a time with a
/// keyset cursor and sent through a bounded channel, so memory stays flat for any result
/// size. The first chunk is read before the response starts, so that an unreachable database
/// is still a 503; a failure after that aborts the body (the client sees a broken response,
/// never a well-formed but truncated array).
async fn stream_orders(
    db: Db,
    filter: OrderFilter,
    offset: i64,
    limit: Option<i64>,
) -> Result<Response, ApiError> {
    let take = |remaining: Option<i64>| remaining.map_or(STREAM_CHUNK, |r| r.min(STREAM_CHUNK));
    let first_take = take(limit);
    let first = {
        let mut conn = db.conn().await?;
        db.timed(orders::list(&mut conn, &filter, None, offset, first_take))
            .await?
    };
    let mut buf = Vec::with_capacity(first.len() * 1024 + 2);
    buf.push(b'[');
    write_orders(&mut buf, &first, true)?;
    let remaining = limit.map(|l| l - first.len() as i64);
    let complete = (first.len() as i64) < first_take || remaining == Some(0);
    let body = if complete {
        buf.push(b']');
        Body::from(buf)
    } else {
        let (tx, body) = Body::channel();
        let cursor = first.last().map(Cursor::from);
        tokio::spawn(continue_stream(db, filter, cursor, remaining, buf, tx));
        body
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn continue_stream(
    db: Db,
    filter: OrderFilter,
    mut cursor: Option<Cursor>,
    mut remaining: Option<i64>,
    first_chunk: Vec<u8>,
    mut tx: warp::hyper::body::Sender,
) {
    if tx.send_data(Bytes::from(first_chunk)).await.is_err() {
        return; // the client went away
    }
    // `send_data` waits until the client has taken the previous chunk: the channel is the
    // bound that keeps a slow client from buffering the whole result here.
    loop {
        let want = remaining.map_or(STREAM_CHUNK, |r| r.min(STREAM_CHUNK));
        let rows = async {
            let mut conn = db.conn().await?;
            db.timed(orders::list(&mut conn, &filter, cursor, 0, want))
                .await
        }
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "order stream aborted");
                tx.abort();
                return;
            }
        };
        let mut buf = Vec::with_capacity(rows.len() * 1024 + 1);
        if let Err(e) = write_orders(&mut buf, &rows, false) {
            tracing::error!(error = %e, "order stream aborted");
            tx.abort();
            return;
        }
        remaining = remaining.map(|r| r - rows.len() as i64);
        cursor = rows.last().map(Cursor::from).or(cursor);
        let done = (rows.len() as i64) < want || remaining == Some(0);
        if done {
            buf.push(b']');
        }
        if tx.send_data(Bytes::from(buf)).await.is_err() {
            return;
        }
        if done {
            return;
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SearchResult {
    orders: Vec<Order>,
    total_count: i64,
    page: i64,
    size: i64,
    has_more: bool,
}

/// `GET /orders?storeNumber=&customerId=&status=&startDate=&endDate=&page=&size=`
pub async fn search(query: Query, state: AppState) -> Result<Response, Rejection> {
    let mut checks = Checks::new();
    let get = |name: &str| {
        query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    };
    let store = get("storeNumber").and_then(|s| checks.store_number_text("storeNumber", s));
    let customer = match get("customerId") {
        Some(c) => checks.required("customerId", Some(c), 100),
        None => None,
    };
    let status = get("status").and_then(|s| checks.status("status", s));
    let start = get("startDate").and_then(|s| checks.instant("startDate", s));
    let end = get("endDate").and_then(|s| checks.instant("endDate", s));
    checks.date_range(start, end);
    let page = checks.int_in(
        "page",
        query.get("page").map(String::as_str),
        0,
        i64::MAX,
        0,
        validate::NOT_NEGATIVE,
    );
    let size = checks.int_in(
        "size",
        query.get("size").map(String::as_str),
        1,
        100,
        20,
        validate::SIZE,
    );
    checks.finish()?;
    let (page, size) = (page.unwrap_or(0), size.unwrap_or(20));
    if store.is_none() && customer.is_none() {
        return Ok(json_response(&SearchResult {
            orders: Vec::new(),
            total_count: 0,
            page,
            size,
            has_more: false,
        }));
    }
    let filter = OrderFilter {
        store_number: store,
        customer_id: customer,
        status,
        created_from: start,
        // The existing service searches up to "now" when no end is given.
        created_to: Some(end.unwrap_or_else(Utc::now)),
    };
    let db = &state.db;
    let mut conn = db.conn().await.map_err(ApiError::from)?;
    let found = db
        .timed(orders::search(
            &mut conn,
            &filter,
            page.saturating_mul(size),
            size,
        ))
        .await
        .map_err(ApiError::from)?;
    let has_more = (page.saturating_add(1)).saturating_mul(size) < found.total_count;
    Ok(json_response(&SearchResult {
        orders: found.orders,
        total_count: found.total_count,
        page,
        size,
        has_more,
    }))
}

/// The body as a JSON object.
fn object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::BadRequest(
            "Request body must be a JSON object".into(),
        )),
    }
}

/// A string field of the body: `Ok(None)` when absent or null, an error when another type.
fn string_field<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    checks: &mut Checks,
) -> Option<&'a str> {
    match map.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => checks.text(name, Some(s)),
        Some(_) => {
            checks.add(name, validate::STRING);
            None
        }
    }
}

/// `PATCH /orders/{orderId}/status` `{ "status" }`
pub async fn update_status(
    id: String,
    body: Value,
    state: AppState,
) -> Result<Response, Rejection> {
    let mut checks = Checks::new();
    let uuid = checks.uuid("orderId", &validate::decode_path(&id));
    let body = object(body)?;
    let status = match body.get("status") {
        None | Some(Value::Null) => {
            checks.add("status", validate::REQUIRED);
            None
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            checks.add("status", validate::REQUIRED);
            None
        }
        Some(Value::String(s)) => checks.status("status", s),
        Some(_) => {
            checks.add("status", validate::STATUS);
            None
        }
    };
    checks.finish()?;
    let (Some(uuid), Some(status)) = (uuid, status) else {
        return Err(ApiError::BadRequest("Request validation failed".into()).into());
    };
    let db = &state.db;
    let mut conn = db.conn().await.map_err(ApiError::from)?;
    let order = db
        .timed(orders::update_status(&mut conn, uuid, status))
        .await
        .map_err(ApiError::from)?;
    Ok(json_response(&order))
}

/// `PATCH /orders/{orderId}/fulfillment` `{ fulfillmentDate?, pickupLocation?, instructions? }`
pub async fn update_fulfillment(
    id: String,
    body: Value,
    state: AppState,
) -> Result<Response, Rejection> {
    let mut checks = Checks::new();
    let uuid = checks.uuid("orderId", &validate::decode_path(&id));
    let body = object(body)?;
    let date = string_field(&body, "fulfillmentDate", &mut checks);
    let pickup = string_field(&body, "pickupLocation", &mut checks);
    let instructions = string_field(&body, "instructions", &mut checks);
    let fulfillment_date = date.and_then(|d| checks.instant("fulfillmentDate", d));
    if date.is_none() && pickup.is_none() && instructions.is_none() {
        checks.add("input", validate::FULFILLMENT_INPUT);
    }
    checks.finish()?;
    let Some(uuid) = uuid else {
        return Err(ApiError::BadRequest("Request validation failed".into()).into());
    };
    let update = FulfillmentUpdate {
        fulfillment_date,
        pickup_location: pickup.map(str::to_owned),
        instructions: instructions.map(str::to_owned),
    };
    let db = &state.db;
    let mut conn = db.conn().await.map_err(ApiError::from)?;
    let order = db
        .timed(orders::update_fulfillment(&mut conn, uuid, &update))
        .await
        .map_err(ApiError::from)?;
    Ok(json_response(&order))
}

/// The order id and the one required text field of the cancel and notes bodies.
fn id_and_text(id: &str, body: Value, field: &str) -> Result<(uuid::Uuid, String), ApiError> {
    let mut checks = Checks::new();
    let uuid = checks.uuid("orderId", &validate::decode_path(id));
    let body = object(body)?;
    let text = string_field(&body, field, &mut checks);
    let text = checks.required(field, text, 10_000);
    checks.finish()?;
    uuid.zip(text)
        .ok_or_else(|| ApiError::BadRequest("Request validation failed".into()))
}

/// `POST /orders/{orderId}/cancel` `{ "reason" }`
pub async fn cancel(id: String, body: Value, state: AppState) -> Result<Response, Rejection> {
    let (uuid, reason) = id_and_text(&id, body, "reason")?;
    let db = &state.db;
    let mut conn = db.conn().await.map_err(ApiError::from)?;
    let order = db
        .timed(orders::cancel(&mut conn, uuid, &reason))
        .await
        .map_err(ApiError::from)?;
    Ok(json_response(&order))
}

/// `POST /orders/{orderId}/notes` `{ "note" }`
pub async fn add_note(id: String, body: Value, state: AppState) -> Result<Response, Rejection> {
    let (uuid, note) = id_and_text(&id, body, "note")?;
    let db = &state.db;
    let mut conn = db.conn().await.map_err(ApiError::from)?;
    let order = db
        .timed(orders::append_note(&mut conn, uuid, &note))
        .await
        .map_err(ApiError::from)?;
    Ok(json_response(&order))
}

/// How long the readiness probe waits for the database.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /health/live`
pub async fn live() -> Result<Response, Rejection> {
    Ok(json_response(&serde_json::json!({ "status": "UP" })))
}

/// `GET /health/ready`
pub async fn ready(state: AppState) -> Result<Response, Rejection> {
    let check = async {
        let mut conn = state.db.pool().get_owned().await?;
        orders::ping(&mut conn).await
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(json_response(
            &serde_json::json!({ "status": "UP", "checks": { "database": "UP" } }),
        )),
        Ok(Err(e)) => Err(ApiError::Unavailable(e.to_string()).into()),
        Err(_) => Err(ApiError::Unavailable("readiness ping timed out".into()).into()),
    }
}

/// `GET /metrics`
pub async fn metrics(state: AppState) -> Result<Response, Rejection> {
    let text = state.metrics.render(state.db.pool(), state.pool_max);
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// `GET /openapi.json`
pub async fn openapi() -> Result<Response, Rejection> {
    let mut response = Response::new(Body::from(crate::openapi::DOCUMENT));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

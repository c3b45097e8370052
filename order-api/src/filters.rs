//! The routes, one function each (the route in its doc comment), assembled behind the
//! layers of [`crate::layers`].

use std::convert::Infallible;

use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap};
use warp::hyper::body::Buf;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::auth::{self, READ_SCOPE, WRITE_SCOPE};
use crate::error::{self, ApiError};
use crate::layers::{finish, request_info, server_span, RequestInfo};
pub use crate::layers::{route_label, ROUTES};
use crate::{graphql, handlers, AppState};

/// The whole server: every route, errors answered as JSON, metrics, and a span per request
/// (the OpenTelemetry server span when traces are exported, the log lines' span always).
pub fn routes(
    state: &AppState,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    let api = search(state)
        .or(order_by_number(state))
        .unify()
        .or(orders_by_store(state))
        .unify()
        .or(orders_by_customer(state))
        .unify()
        .or(order_by_id(state))
        .unify()
        .or(update_status(state))
        .unify()
        .or(update_fulfillment(state))
        .unify()
        .or(cancel(state))
        .unify()
        .or(add_note(state))
        .unify()
        .or(graphql_post(state))
        .unify()
        .or(graphiql())
        .unify()
        .or(health_live())
        .unify()
        .or(health_ready(state))
        .unify()
        .or(metrics(state))
        .unify()
        .or(actuator_health(state))
        .unify()
        .or(actuator_liveness())
        .unify()
        .or(actuator_readiness(state))
        .unify()
        .or(actuator_info())
        .unify()
        .or(actuator_prometheus(state))
        .unify()
        .or(openapi())
        .unify()
        .boxed();
    let recovered = api.recover(error::recover).unify();
    let metrics = state.metrics.clone();
    request_info()
        .and(recovered)
        .map(move |info: RequestInfo, response: Response| finish(&metrics, &info, response))
        .with(warp::trace(|info| {
            server_span(info.method(), info.path(), info.request_headers())
        }))
}

fn with_state(state: &AppState) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// Typed query parameters; unknown ones are ignored.
fn query<T: DeserializeOwned + Send + 'static>(
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::query::<T>()
}

fn read(state: &AppState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    auth::require(state.auth.clone(), READ_SCOPE)
}

fn write(state: &AppState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    auth::require(state.auth.clone(), WRITE_SCOPE)
}

/// A JSON request body of type `T`: `application/json` (415 otherwise), at most `limit` bytes
/// (413), well-formed (400). Read as a stream so that a body without `Content-Length` is
/// bounded too.
pub fn json_body<T: DeserializeOwned + Send + 'static>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    json_content_type()
        .and(bounded_body(limit))
        .and_then(|bytes: Vec<u8>| async move {
            serde_json::from_slice(&bytes).map_err(|e| {
                Rejection::from(ApiError::BadRequest(format!(
                    "Malformed JSON request body: {e}"
                )))
            })
        })
}

/// The whole request body, at most `limit` bytes (413 otherwise), whether its length is
/// declared (`Content-Length`) or not (`Transfer-Encoding: chunked`).
fn bounded_body(limit: u64) -> impl Filter<Extract = (Vec<u8>,), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and(warp::body::stream())
        .and_then(move |headers: HeaderMap, body| read_bounded(headers, body, limit))
}

/// 415 unless the body is declared JSON.
fn json_content_type() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(|content_type: Option<String>| async move {
            let is_json = content_type
                .as_deref()
                .and_then(|v| v.split(';').next())
                .is_some_and(|mime| {
                    let mime = mime.trim().to_ascii_lowercase();
                    mime == "application/json"
                        || (mime.starts_with("application/") && mime.ends_with("+json"))
                });
            if is_json {
                Ok(())
            } else {
                Err(Rejection::from(ApiError::UnsupportedMediaType))
            }
        })
        .untuple_one()
}

async fn read_bounded<S, B>(headers: HeaderMap, body: S, limit: u64) -> Result<Vec<u8>, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit).into());
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    let mut body = Box::pin(body);
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("Unreadable request body: {e}")))?;
        if (bytes.len() + chunk.remaining()) as u64 > limit {
            return Err(ApiError::PayloadTooLarge(limit).into());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(bytes)
}

/// `GET /orders?storeNumber=&customerId=&status=&startDate=&endDate=&page=&size=`
pub fn search(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders")
        .and(warp::get())
        .and(read(state))
        .and(query())
        .and(with_state(state))
        .and_then(handlers::search)
        .boxed()
}

/// `GET /orders/number/{orderNumber}`
pub fn order_by_number(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / "number" / String)
        .and(warp::get())
        .and(read(state))
        .and(with_state(state))
        .and_then(handlers::get_order_by_number)
        .boxed()
}

/// `GET /orders/store/{storeNumber}?limit=&offset=`
pub fn orders_by_store(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / "store" / String)
        .and(warp::get())
        .and(read(state))
        .and(query())
        .and(with_state(state))
        .and_then(handlers::list_by_store)
        .boxed()
}

/// `GET /orders/customer/{customerId}?limit=&offset=`
pub fn orders_by_customer(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / "customer" / String)
        .and(warp::get())
        .and(read(state))
        .and(query())
        .and(with_state(state))
        .and_then(handlers::list_by_customer)
        .boxed()
}

/// `GET /orders/{orderId}`
pub fn order_by_id(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String)
        .and(warp::get())
        .and(read(state))
        .and(with_state(state))
        .and_then(handlers::get_order)
        .boxed()
}

/// `PATCH /orders/{orderId}/status` `{ "status" }`
pub fn update_status(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "status")
        .and(warp::patch())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_state(state))
        .and_then(handlers::update_status)
        .boxed()
}

/// `PATCH /orders/{orderId}/fulfillment` `{ fulfillmentDate?, pickupLocation?, instructions? }`
pub fn update_fulfillment(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "fulfillment")
        .and(warp::patch())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_state(state))
        .and_then(handlers::update_fulfillment)
        .boxed()
}

/// `POST /orders/{orderId}/cancel` `{ "reason" }`
pub fn cancel(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "cancel")
        .and(warp::post())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_state(state))
        .and_then(handlers::cancel)
        .boxed()
}

/// `POST /orders/{orderId}/notes` `{ "note" }`
pub fn add_note(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "notes")
        .and(warp::post())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_state(state))
        .and_then(handlers::add_note)
        .boxed()
}

/// `POST /graphql`: any valid token; each field checks its own scope. The body has the same
/// content type check and size limit as REST bodies (chunked bodies included), and is read
/// as a GraphQL request the way async-graphql-warp reads one.
pub fn graphql_post(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("graphql")
        .and(warp::post())
        .and(auth::authenticate(state.auth.clone()))
        .and(json_content_type())
        .and(graphql_request(state))
        .and(with_state(state))
        .and_then(graphql::handle)
        .boxed()
}

/// The body of `POST /graphql` as one GraphQL request, with the schema to run it on.
fn graphql_request(
    state: &AppState,
) -> impl Filter<Extract = ((graphql::OrderSchema, async_graphql::Request),), Error = Rejection> + Clone
{
    let schema = state.schema().clone();
    bounded_body(state.max_body_bytes).and_then(move |bytes: Vec<u8>| {
        let schema = schema.clone();
        async move {
            async_graphql::http::receive_json(bytes.as_slice())
                .await
                .map(|request| (schema, request))
                .map_err(|e| warp::reject::custom(async_graphql_warp::GraphQLBadRequest(e)))
        }
    })
}

/// `GET /graphiql`: the GraphiQL page (no token: it holds no data).
pub fn graphiql() -> BoxedFilter<(Response,)> {
    // Built once: the page is the same for every request.
    let html = async_graphql::http::GraphiQLSource::build()
        .endpoint("/graphql")
        .finish();
    warp::path!("graphiql")
        .and(warp::get())
        .map(move || warp::reply::Reply::into_response(warp::reply::html(html.clone())))
        .boxed()
}

/// `GET /health/live`
pub fn health_live() -> BoxedFilter<(Response,)> {
    warp::path!("health" / "live")
        .and(warp::get())
        .and_then(handlers::live)
        .boxed()
}

/// `GET /health/ready`
pub fn health_ready(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("health" / "ready")
        .and(warp::get())
        .and(with_state(state))
        .and_then(handlers::ready)
        .boxed()
}

/// `GET /metrics`
pub fn metrics(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .and_then(handlers::metrics)
        .boxed()
}

/// `GET /actuator/health`: Spring Boot Actuator's health, from the readiness check.
pub fn actuator_health(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("actuator" / "health")
        .and(warp::get())
        .and(with_state(state))
        .and_then(handlers::actuator_health)
        .boxed()
}

/// `GET /actuator/health/liveness`
pub fn actuator_liveness() -> BoxedFilter<(Response,)> {
    warp::path!("actuator" / "health" / "liveness")
        .and(warp::get())
        .and_then(handlers::live)
        .boxed()
}

/// `GET /actuator/health/readiness`
pub fn actuator_readiness(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("actuator" / "health" / "readiness")
        .and(warp::get())
        .and(with_state(state))
        .and_then(handlers::actuator_health)
        .boxed()
}

/// `GET /actuator/info`
pub fn actuator_info() -> BoxedFilter<(Response,)> {
    warp::path!("actuator" / "info")
        .and(warp::get())
        .and_then(handlers::actuator_info)
        .boxed()
}

/// `GET /actuator/prometheus`: the same exposition as `/metrics`.
pub fn actuator_prometheus(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("actuator" / "prometheus")
        .and(warp::get())
        .and(with_state(state))
        .and_then(handlers::metrics)
        .boxed()
}

/// `GET /openapi.json`
pub fn openapi() -> BoxedFilter<(Response,)> {
    warp::path!("openapi.json")
        .and(warp::get())
        .and_then(handlers::openapi)
        .boxed()
}

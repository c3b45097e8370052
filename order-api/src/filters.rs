//! The routes, one function each (the route in its doc comment), and the layers every request
//! passes through: request id, error bodies, metrics.

use std::convert::Infallible;
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, HeaderValue, Method};
use warp::hyper::body::Buf;
use warp::hyper::Body;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::auth::{self, READ_SCOPE, WRITE_SCOPE};
use crate::error::{self, ApiError, ErrorBody};
use crate::metrics::Metrics;
use crate::{graphql, handlers, AppState};

/// Every route the server answers, as `(method, path template)`: the metrics' route labels
/// and the OpenAPI test both read it. More specific templates come first.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/orders"),
    ("GET", "/orders/number/{orderNumber}"),
    ("GET", "/orders/store/{storeNumber}"),
    ("GET", "/orders/customer/{customerId}"),
    ("GET", "/orders/{orderId}"),
    ("PATCH", "/orders/{orderId}/status"),
    ("PATCH", "/orders/{orderId}/fulfillment"),
    ("POST", "/orders/{orderId}/cancel"),
    ("POST", "/orders/{orderId}/notes"),
    ("POST", "/graphql"),
    ("GET", "/graphiql"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// Whether `path` is an instance of `template` (`{name}` matches any one segment).
fn template_matches(template: &str, path: &str) -> bool {
    let mut parts = template.trim_matches('/').split('/');
    let mut segments = path.trim_matches('/').split('/');
    loop {
        match (parts.next(), segments.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if p.starts_with('{') || p == s => {}
            _ => return false,
        }
    }
}

/// The template of `path`, or `"unmatched"`: metrics labels must not grow with client input.
pub fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .map(|(_, template)| *template)
        .find(|template| template_matches(template, path))
        .unwrap_or("unmatched")
}

/// The methods some route answers at `path`, for the `Allow` header of a 405 (RFC 9110
/// 15.5.6: a 405 must list them).
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let mut methods: Vec<&'static str> = ROUTES
        .iter()
        .filter(|(_, template)| template_matches(template, path))
        .map(|(method, _)| *method)
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods
}

/// What the outermost layer needs to finish a response.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub path: String,
    pub method: Method,
    pub trace_id: Option<String>,
    pub started: Instant,
}

/// The trace id of a W3C `traceparent` header, else a sane `X-Request-Id`.
pub fn trace_id(headers: &HeaderMap) -> Option<String> {
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let parts: Vec<&str> = v.trim().split('-').collect();
            let id = *parts.get(1)?;
            let valid = parts.len() >= 4
                && id.len() == 32
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && id.bytes().any(|b| b != b'0');
            valid.then(|| id.to_ascii_lowercase())
        });
    traceparent.or_else(|| {
        headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
    })
}

fn request_info() -> impl Filter<Extract = (RequestInfo,), Error = Infallible> + Clone {
    warp::path::full()
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .map(
            |path: warp::path::FullPath, method: Method, headers: HeaderMap| RequestInfo {
                path: path.as_str().to_owned(),
                method,
                trace_id: trace_id(&headers),
                started: Instant::now(),
            },
        )
}

/// Writes a pending error body (with path and trace id), records metrics and logs.
fn finish(metrics: &Metrics, info: &RequestInfo, mut response: Response) -> Response {
    if let Some(body) = response.extensions_mut().remove::<ErrorBody>() {
        let json = body.to_json(&info.path, info.trace_id.as_deref());
        *response.body_mut() = Body::from(json.to_string());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if response.status() == warp::http::StatusCode::METHOD_NOT_ALLOWED {
        let allowed = allowed_methods(&info.path).join(", ");
        if let Ok(value) = HeaderValue::from_str(&allowed) {
            response.headers_mut().insert(header::ALLOW, value);
        }
    }
    let status = response.status().as_u16();
    let elapsed = info.started.elapsed();
    metrics.observe(
        route_label(&info.path),
        info.method.as_str(),
        status,
        elapsed,
    );
    tracing::debug!(
        method = %info.method,
        path = %info.path,
        status,
        trace_id = info.trace_id.as_deref().unwrap_or(""),
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}

/// The whole server: every route, errors answered as JSON, metrics, and a log span per
/// request carrying its trace id.
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
        .or(openapi())
        .unify()
        .boxed();
    let recovered = api.recover(error::recover).unify();
    let metrics = state.metrics.clone();
    request_info()
        .and(recovered)
        .map(move |info: RequestInfo, response: Response| finish(&metrics, &info, response))
        .with(warp::trace(|info| {
            let trace_id = trace_id(info.request_headers());
            tracing::info_span!(
                "request",
                method = %info.method(),
                path = %info.path(),
                trace_id = trace_id.as_deref().unwrap_or(""),
            )
        }))
}

fn with_state(state: &AppState) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

fn query(
) -> impl Filter<Extract = (std::collections::HashMap<String, String>,), Error = Rejection> + Clone
{
    warp::query::<std::collections::HashMap<String, String>>()
}

fn read(state: &AppState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    auth::require(state.auth.clone(), READ_SCOPE)
}

fn write(state: &AppState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    auth::require(state.auth.clone(), WRITE_SCOPE)
}

/// A JSON request body: `application/json` (415 otherwise), at most `limit` bytes (413),
/// well-formed (400). Read as a stream so that a body without `Content-Length` is bounded too.
pub fn json_body(
    limit: u64,
) -> impl Filter<Extract = (serde_json::Value,), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and(warp::body::stream())
        .and_then(move |headers: HeaderMap, body| read_json(headers, body, limit))
}

async fn read_json<S, B>(
    headers: HeaderMap,
    body: S,
    limit: u64,
) -> Result<serde_json::Value, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType.into());
    }
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
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("Malformed JSON request body: {e}")).into())
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

/// `POST /graphql`: any valid token; each field checks its own scope.
pub fn graphql_post(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("graphql")
        .and(warp::post())
        .and(auth::authenticate(state.auth.clone()))
        .and(json_body(state.max_body_bytes))
        .and(with_state(state))
        .and_then(graphql::handle)
        .boxed()
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

/// `GET /openapi.json`
pub fn openapi() -> BoxedFilter<(Response,)> {
    warp::path!("openapi.json")
        .and(warp::get())
        .and_then(handlers::openapi)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn route_labels_are_templates() {
        assert_eq!(route_label("/orders"), "/orders");
        assert_eq!(route_label("/orders/abc"), "/orders/{orderId}");
        assert_eq!(
            route_label("/orders/number/N-1"),
            "/orders/number/{orderNumber}"
        );
        assert_eq!(route_label("/orders/abc/notes"), "/orders/{orderId}/notes");
        assert_eq!(route_label("/orders/abc/other"), "unmatched");
        assert_eq!(route_label("/health/live"), "/health/live");
        assert_eq!(route_label("/"), "unmatched");
    }
}

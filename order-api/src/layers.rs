//! The layers every request passes through, outside the routes: the request's span and trace id, and the finishing of
//! every response (error bodies with path and trace id, metrics, the span's status, the request
//! log line).

use std::convert::Infallible;
use std::time::Instant;

use opentelemetry::propagation::Extractor;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use warp::http::{header, HeaderMap, HeaderValue, Method};
use warp::hyper::Body;
use warp::reply::Response;
use warp::Filter;

use crate::error::ErrorBody;
use crate::metrics::Metrics;
use crate::routes::{allowed_methods, route_label};

/// What the outermost layer needs to finish a response.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub path: String,
    /// [`route_label`] of `path`, worked out once.
    pub route: &'static str,
    pub method: Method,
    pub trace_id: Option<String>,
    pub started: Instant,
}

/// The trace id of a W3C `traceparent` header value, else a sane `X-Request-Id` value.
fn trace_id_of(traceparent: Option<&str>, request_id: Option<&str>) -> Option<String> {
    let traceparent = traceparent.and_then(|v| {
        let parts: Vec<&str> = v.trim().split('-').collect();
        let id = *parts.get(1)?;
        let valid = parts.len() >= 4
            && id.len() == 32
            && id.bytes().all(|b| b.is_ascii_hexdigit())
            && id.bytes().any(|b| b != b'0');
        valid.then(|| id.to_ascii_lowercase())
    });
    traceparent.or_else(|| {
        request_id
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
    })
}

/// The request's headers as OpenTelemetry propagators read them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(header::HeaderName::as_str).collect()
    }
}

/// The request's span: the OpenTelemetry HTTP server span (named `METHOD /route/{template}`,
/// with the HTTP semantic conventions' attributes), continuing the caller's W3C `traceparent`.
/// [`finish`] records the status; the GraphQL handler the operation. The trace id is the
/// span's own, not an attribute of it.
///
/// A `debug` span, as the database spans are: exported whenever traces are, but at the `info`
/// log level the log layer neither shows it nor formats its fields, and with traces off it
/// costs nothing (the log layer's span bookkeeping was a twentieth of a request's CPU).
pub fn server_span(method: &Method, path: &str, headers: &HeaderMap) -> tracing::Span {
    let route = route_label(path);
    let span = tracing::debug_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
        graphql.operation.type = tracing::field::Empty,
        graphql.operation.name = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Headers(headers))
    });
    // Err only when traces are off (no tracing layer): there is no parent to set then.
    let _ = span.set_parent(parent);
    span
}

/// The request's path, method, route and trace id; only the two headers the trace id comes
/// from are read (not a copy of every header).
pub fn request_info() -> impl Filter<Extract = (RequestInfo,), Error = Infallible> + Clone {
    warp::path::full()
        .and(warp::method())
        .and(header_text("traceparent"))
        .and(header_text("x-request-id"))
        .map(
            |path: warp::path::FullPath,
             method: Method,
             traceparent: Option<String>,
             request_id: Option<String>| {
                let path = path.as_str();
                RequestInfo {
                    route: route_label(path),
                    path: path.to_owned(),
                    method,
                    trace_id: trace_id_of(traceparent.as_deref(), request_id.as_deref()),
                    started: Instant::now(),
                }
            },
        )
}

/// One header's text if present and visible ASCII (otherwise `None`), never a rejection.
fn header_text(
    name: &'static str,
) -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::header::optional::<String>(name)
        .or(warp::any().map(|| None))
        .unify()
}

/// Writes a pending error body (with path and trace id), records metrics and the span's
/// status, and logs. Runs inside the request's span.
pub fn finish(metrics: &Metrics, info: &RequestInfo, mut response: Response) -> Response {
    // The trace's id when the request is traced, else the caller's (traceparent, X-Request-Id).
    let trace_id =
        order_store::runtime::telemetry::current_trace_id().or_else(|| info.trace_id.clone());
    if let Some(body) = response.extensions_mut().remove::<ErrorBody>() {
        let json = body.to_json(&info.path, trace_id.as_deref());
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
    metrics.observe(info.route, info.method.as_str(), response.status(), elapsed);
    let span = tracing::Span::current();
    // An integer attribute, as the conventions type it (so that `>= 500` queries match):
    // tracing-opentelemetry exports i64 as an integer but unsigned values as text.
    span.record("http.response.status_code", i64::from(status));
    // The HTTP conventions: a server span is an error for 5xx only; 4xx is the client's.
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(
        method = %info.method,
        path = %info.path,
        status,
        trace_id = trace_id.as_deref().unwrap_or(""),
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}

//! Every endpoint, declared once: the module of its resource holds its [`Route`] (method and
//! path template), its warp filter (the route in its doc comment) and its handler, side by
//! side. [`ROUTES`] lists those declarations; the metrics' route labels, the span names and
//! the `Allow` header of a 405 are derived from it, and a test checks that the server answers
//! exactly these routes and that the OpenAPI document lists exactly them.

pub mod body;
pub mod changes;
pub mod graphql;
pub mod ops;
pub mod orders;

use std::convert::Infallible;

use serde::de::DeserializeOwned;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::auth::{self, READ_SCOPE, WRITE_SCOPE};
use crate::error;
use crate::layers::{finish, request_info, server_span, RequestInfo};
use crate::replica::{self, CONSISTENCY_HEADER};
use crate::AppState;

/// One endpoint: its method and its path template (`{name}` stands for one segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

impl Route {
    pub const fn get(path: &'static str) -> Self {
        Self {
            method: "GET",
            path,
        }
    }

    pub const fn post(path: &'static str) -> Self {
        Self {
            method: "POST",
            path,
        }
    }

    pub const fn patch(path: &'static str) -> Self {
        Self {
            method: "PATCH",
            path,
        }
    }
}

/// Every route the server answers, from the resources' declarations. More specific templates
/// come first, as the filters are tried.
pub const ROUTES: &[Route] = &[
    orders::SEARCH,
    orders::BY_NUMBER,
    orders::BY_STORE,
    orders::BY_CUSTOMER,
    orders::BY_ID,
    changes::UPDATE_STATUS,
    changes::UPDATE_FULFILLMENT,
    changes::CANCEL,
    changes::ADD_NOTE,
    graphql::GRAPHQL,
    graphql::GRAPHIQL,
    ops::HEALTH_AND_METRICS[0],
    ops::HEALTH_AND_METRICS[1],
    ops::HEALTH_AND_METRICS[2],
    ops::HEALTH_AND_METRICS[3],
    ops::HEALTH_AND_METRICS[4],
    ops::HEALTH_AND_METRICS[5],
    ops::HEALTH_AND_METRICS[6],
    ops::HEALTH_AND_METRICS[7],
    ops::OPENAPI,
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
        .map(|route| route.path)
        .find(|template| template_matches(template, path))
        .unwrap_or("unmatched")
}

/// The methods some route answers at `path`, for the `Allow` header of a 405 (RFC 9110
/// 15.5.6: a 405 must list them).
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let mut methods: Vec<&'static str> = ROUTES
        .iter()
        .filter(|route| template_matches(route.path, path))
        .map(|route| route.method)
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods
}

/// The whole server: every route, errors answered as JSON, metrics, and a span per request
/// (the OpenTelemetry server span when traces are exported, the log lines' span always).
pub fn routes(
    state: &AppState,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    let api = orders::search(state)
        .or(orders::order_by_number(state))
        .unify()
        .or(orders::orders_by_store(state))
        .unify()
        .or(orders::orders_by_customer(state))
        .unify()
        .or(orders::order_by_id(state))
        .unify()
        .or(changes::update_status(state))
        .unify()
        .or(changes::update_fulfillment(state))
        .unify()
        .or(changes::cancel(state))
        .unify()
        .or(changes::add_note(state))
        .unify()
        .or(graphql::graphql_post(state))
        .unify()
        .or(graphql::graphiql())
        .unify()
        .or(ops::health_and_metrics(state))
        .unify()
        .or(ops::openapi())
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

/// `value` as a JSON response.
pub(crate) fn json_response(value: &impl serde::Serialize) -> Response {
    warp::reply::Reply::into_response(warp::reply::json(value))
}

pub(crate) fn with_state(
    state: &AppState,
) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// The client's `X-Consistency-Token`, if it sent one; a malformed one is a 400.
pub(crate) fn consistency_token() -> impl Filter<Extract = (Option<u64>,), Error = Rejection> + Clone
{
    warp::header::optional::<String>(CONSISTENCY_HEADER).and_then(
        |token: Option<String>| async move {
            token
                .as_deref()
                .map(replica::parse_token)
                .transpose()
                .map_err(Rejection::from)
        },
    )
}

/// The state of a read: its reads routed with the request's consistency token.
pub(crate) fn with_reads(
    state: &AppState,
) -> impl Filter<Extract = (AppState,), Error = Rejection> + Clone {
    let state = state.clone();
    consistency_token().map(move |after| state.for_reads(after))
}

/// The state of a change: everything on the primary.
pub(crate) fn with_changes(
    state: &AppState,
) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    let state = state.clone();
    warp::any().map(move || state.for_changes())
}

/// Typed query parameters; unknown ones are ignored.
pub(crate) fn query<T: DeserializeOwned + Send + 'static>(
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::query::<T>()
}

pub(crate) fn read(state: &AppState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    auth::require(state.auth.clone(), READ_SCOPE)
}

pub(crate) fn write(state: &AppState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    auth::require(state.auth.clone(), WRITE_SCOPE)
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

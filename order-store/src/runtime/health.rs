//! The health, readiness and metrics endpoints both binaries serve, in their plain form
//! (`/health/live`, `/health/ready`, `/metrics`) and in Spring Boot Actuator's
//! (`/actuator/health`, `/actuator/health/liveness`, `/actuator/health/readiness`,
//! `/actuator/info`, `/actuator/prometheus`; docs/compatibility.md §7), as warp filters over
//! what only the binary knows: its readiness check and its metrics ([`Probe`]).

use std::future::Future;

use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::hyper::Body;
use warp::reply::{Reply, Response};
use warp::Filter;

pub const LIVE: &str = "/health/live";
pub const READY: &str = "/health/ready";
pub const METRICS: &str = "/metrics";
pub const ACTUATOR_HEALTH: &str = "/actuator/health";
pub const ACTUATOR_LIVENESS: &str = "/actuator/health/liveness";
pub const ACTUATOR_READINESS: &str = "/actuator/health/readiness";
pub const ACTUATOR_INFO: &str = "/actuator/info";
pub const ACTUATOR_PROMETHEUS: &str = "/actuator/prometheus";

/// Every path [`routes`] answers, all with `GET`.
pub const PATHS: [&str; 8] = [
    LIVE,
    READY,
    METRICS,
    ACTUATOR_HEALTH,
    ACTUATOR_LIVENESS,
    ACTUATOR_READINESS,
    ACTUATOR_INFO,
    ACTUATOR_PROMETHEUS,
];

/// What a binary contributes to its health endpoints.
pub trait Probe: Clone + Send + Sync + 'static {
    /// The outcome of one readiness check.
    type Check: Send;

    /// `/actuator/info`'s `app.name`.
    const NAME: &'static str;
    /// `/actuator/info`'s `app.version`.
    const VERSION: &'static str;
    /// The `Content-Type` of the Prometheus exposition.
    const METRICS_CONTENT_TYPE: &'static str;

    /// Checks whether the instance should get traffic now.
    fn check(&self) -> impl Future<Output = Self::Check> + Send;
    /// Whether `check` found the instance ready (Actuator's `UP`, else `DOWN` with a 503).
    fn is_ready(check: &Self::Check) -> bool;
    /// The `/health/ready` reply to `check`, with the binary's details.
    fn ready_reply(check: Self::Check) -> Response;
    /// The Prometheus text exposition.
    fn render_metrics(&self) -> impl Future<Output = String> + Send;
}

/// A JSON reply with `status`.
pub fn json(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A `GET` of exactly `path` (a template without parameters).
fn get(path: &'static str) -> BoxedFilter<()> {
    path.trim_start_matches('/')
        .split('/')
        .fold(warp::any().boxed(), |filter, segment| {
            filter.and(warp::path(segment)).boxed()
        })
        .and(warp::path::end())
        .and(warp::get())
        .boxed()
}

/// A `GET` of either path.
fn get_either(first: &'static str, second: &'static str) -> BoxedFilter<()> {
    get(first).or(get(second)).unify().boxed()
}

/// Every endpoint of [`PATHS`], answered from `probe`.
pub fn routes<P: Probe>(probe: &P) -> BoxedFilter<(Response,)> {
    let live = get_either(LIVE, ACTUATOR_LIVENESS)
        .map(|| json(StatusCode::OK, "{\"status\":\"UP\"}".to_owned()));
    let ready = get(READY)
        .and(with(probe))
        .then(|probe: P| async move { P::ready_reply(probe.check().await) });
    let actuator_health = get_either(ACTUATOR_HEALTH, ACTUATOR_READINESS)
        .and(with(probe))
        .then(|probe: P| async move {
            if P::is_ready(&probe.check().await) {
                json(StatusCode::OK, "{\"status\":\"UP\"}".to_owned())
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "{\"status\":\"DOWN\"}".to_owned(),
                )
            }
        });
    let info = get(ACTUATOR_INFO).map(|| {
        let body = serde_json::json!({ "app": { "name": P::NAME, "version": P::VERSION } });
        json(StatusCode::OK, body.to_string())
    });
    let metrics = get_either(METRICS, ACTUATOR_PROMETHEUS)
        .and(with(probe))
        .then(|probe: P| async move {
            let mut response = Response::new(Body::from(probe.render_metrics().await));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(P::METRICS_CONTENT_TYPE),
            );
            response
        });
    live.or(ready)
        .unify()
        .or(actuator_health)
        .unify()
        .or(info)
        .unify()
        .or(metrics)
        .unify()
        .map(Reply::into_response)
        .boxed()
}

fn with<P: Probe>(
    probe: &P,
) -> impl Filter<Extract = (P,), Error = std::convert::Infallible> + Clone {
    let probe = probe.clone();
    warp::any().map(move || probe.clone())
}

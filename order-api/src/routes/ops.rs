//! Operations endpoints: the shared health, readiness and metrics endpoints
//! ([`order_store::runtime::health`]) over this binary's readiness check and metrics, and the OpenAPI
//! document.

use order_store::runtime::health::{self, Probe};
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue};
use warp::hyper::Body;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{json_response, Route};
use crate::error::ApiError;
use crate::{service, AppState};

/// The routes of [`health_and_metrics()`].
pub const HEALTH_AND_METRICS: [Route; 8] = [
    Route::get(health::LIVE),
    Route::get(health::READY),
    Route::get(health::METRICS),
    Route::get(health::ACTUATOR_HEALTH),
    Route::get(health::ACTUATOR_LIVENESS),
    Route::get(health::ACTUATOR_READINESS),
    Route::get(health::ACTUATOR_INFO),
    Route::get(health::ACTUATOR_PROMETHEUS),
];

/// `GET /health/live`, `GET /health/ready`, `GET /metrics` and their Actuator forms
/// (`/actuator/health`, `/actuator/health/liveness`, `/actuator/health/readiness`,
/// `/actuator/info`, `/actuator/prometheus`).
pub fn health_and_metrics(state: &AppState) -> BoxedFilter<(Response,)> {
    health::routes(state)
}

impl Probe for AppState {
    /// Ready, or why the instance should not get traffic now.
    type Check = Result<(), &'static str>;

    const NAME: &'static str = "order-api";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METRICS_CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    async fn check(&self) -> Result<(), &'static str> {
        service::unready_reason(self).await.map_or(Ok(()), Err)
    }

    fn is_ready(check: &Result<(), &'static str>) -> bool {
        check.is_ok()
    }

    /// 503 with the error body while the database is unreachable or the instance is
    /// shutting down.
    fn ready_reply(check: Result<(), &'static str>) -> Response {
        match check {
            Ok(()) => json_response(
                &serde_json::json!({ "status": "UP", "checks": { "database": "UP" } }),
            ),
            Err(reason) => ApiError::Unavailable(reason.into()).body().into_response(),
        }
    }

    async fn render_metrics(&self) -> String {
        self.metrics.render(self.db.pool(), self.pool_max)
    }
}

/// The route of [`openapi()`].
pub const OPENAPI: Route = Route::get("/openapi.json");

/// `GET /openapi.json`
pub fn openapi() -> BoxedFilter<(Response,)> {
    warp::path!("openapi.json")
        .and(warp::get())
        .and_then(answer_openapi)
        .boxed()
}

/// Answers [`openapi()`].
async fn answer_openapi() -> Result<Response, Rejection> {
    let mut response = Response::new(Body::from(crate::openapi::DOCUMENT));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

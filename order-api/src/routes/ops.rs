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

/// The OpenAPI operations of [`health_and_metrics()`]. utoipa describes one route per function
/// and these routes are one filter (of `order-store`), so each route has a bodiless function
/// here that only carries its annotation.
pub(crate) mod documented {
    #![allow(dead_code, reason = "annotation carriers, never called")]

    use order_store::runtime::health;

    use crate::openapi::schemas::{ActuatorHealth, ErrorBody, Health};

    #[utoipa::path(
        get,
        path = health::LIVE,
        operation_id = "live",
        summary = "Liveness",
        security(()),
        responses((status = 200, description = "The process is up", body = Health))
    )]
    pub fn live() {}

    #[utoipa::path(
        get,
        path = health::READY,
        operation_id = "ready",
        summary = "Readiness: the database answers",
        security(()),
        responses(
            (status = 200, description = "Ready", body = Health),
            (status = 503, description = "Database unavailable", body = ErrorBody)
        )
    )]
    pub fn ready() {}

    #[utoipa::path(
        get,
        path = health::METRICS,
        operation_id = "metrics",
        summary = "Prometheus metrics",
        security(()),
        responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
    )]
    pub fn metrics() {}

    #[utoipa::path(
        get,
        path = health::ACTUATOR_HEALTH,
        operation_id = "actuatorHealth",
        summary = "Spring Boot Actuator health (database readiness)",
        security(()),
        responses(
            (status = 200, description = "UP", body = inline(ActuatorHealth)),
            (status = 503, description = "DOWN: the database is unreachable", body = inline(ActuatorHealth))
        )
    )]
    pub fn actuator_health() {}

    #[utoipa::path(
        get,
        path = health::ACTUATOR_LIVENESS,
        operation_id = "actuatorLiveness",
        summary = "Actuator liveness: the process answers",
        security(()),
        responses((status = 200, description = "UP", body = inline(ActuatorHealth)))
    )]
    pub fn actuator_liveness() {}

    #[utoipa::path(
        get,
        path = health::ACTUATOR_READINESS,
        operation_id = "actuatorReadiness",
        summary = "Actuator readiness: the database answers",
        security(()),
        responses(
            (status = 200, description = "UP", body = inline(ActuatorHealth)),
            (status = 503, description = "DOWN", body = inline(ActuatorHealth))
        )
    )]
    pub fn actuator_readiness() {}

    #[utoipa::path(
        get,
        path = health::ACTUATOR_INFO,
        operation_id = "actuatorInfo",
        summary = "Actuator info: name and version",
        security(()),
        responses((status = 200, description = "build information", body = Object))
    )]
    pub fn actuator_info() {}

    #[utoipa::path(
        get,
        path = health::ACTUATOR_PROMETHEUS,
        operation_id = "actuatorPrometheus",
        summary = "Prometheus metrics (the same exposition as /metrics)",
        security(()),
        responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"))
    )]
    pub fn actuator_prometheus() {}
}

/// The route of [`openapi()`].
pub const OPENAPI: Route = Route::get("/openapi.json");

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = OPENAPI.path,
    operation_id = "openapi",
    summary = "This document",
    security(()),
    responses((status = 200, description = "OpenAPI 3 document", body = Object))
)]
pub fn openapi() -> BoxedFilter<(Response,)> {
    warp::path!("openapi.json")
        .and(warp::get())
        .and_then(answer_openapi)
        .boxed()
}

/// Answers [`openapi()`].
async fn answer_openapi() -> Result<Response, Rejection> {
    let mut response = Response::new(Body::from(crate::openapi::DOCUMENT.as_str()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

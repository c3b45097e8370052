//! The API's one error type and its one mapping to HTTP.
//!
//! Handlers and filters reject with [`ApiError`]; [`recover`] turns every rejection (ours and
//! warp's own: unknown route, wrong method) into a status and a pending [`ErrorBody`] carried in
//! the response's extensions. The outermost layer ([`crate::layers::finish`]) knows the
//! request path and trace id and writes the body, so every error has the same shape
//! (docs/compatibility.md §3): `{error, message, path, status, traceId, details}`.

use std::convert::Infallible;

use order_store::{FieldError, OrderStatus, StoreError};
use serde_json::json;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more invalid inputs; all of them are reported.
    #[error("Request validation failed")]
    Validation(Vec<FieldError>),
    /// No order has this id or number (as the client wrote it).
    #[error("order {0} not found")]
    OrderNotFound(String),
    /// The order's status does not lead to the requested one.
    #[error("invalid status transition from {from} to {to}")]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
    /// The order's status is past the point where it can be cancelled.
    #[error("cannot cancel an order in status {0}")]
    CannotCancel(OrderStatus),
    /// A value the database refuses (its reason).
    #[error("{0}")]
    BadRequest(String),
    /// A body declared JSON that does not parse as the request's JSON (the parser's reason).
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// The body could not be read off the connection.
    #[error("unreadable body: {0}")]
    UnreadableBody(String),
    /// An `X-Consistency-Token` that is not a token this service hands out.
    #[error("malformed consistency token")]
    MalformedConsistencyToken,
    #[error("{0}")]
    Conflict(String),
    /// The reason is logged, never returned: it would help an attacker probe the checks.
    #[error("authentication failed: {0}")]
    Unauthenticated(String),
    #[error("missing scope {0}")]
    Forbidden(&'static str),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(u64),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// The database is unreachable or too slow; the client may retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl warp::reject::Reject for ApiError {}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => ApiError::OrderNotFound(id.to_string()),
            StoreError::InvalidTransition { from, to } => ApiError::InvalidTransition { from, to },
            StoreError::CannotCancel(status) => ApiError::CannotCancel(status),
            StoreError::EmptyFulfillmentUpdate => ApiError::Validation(vec![FieldError::new(
                "input",
                crate::validate::FULFILLMENT_INPUT,
            )]),
            StoreError::Validation(errors) => ApiError::Validation(errors),
            StoreError::InvalidData(message) => ApiError::BadRequest(message),
            StoreError::Unavailable(message) => ApiError::Unavailable(message),
            // Start-up conditions, never met while serving a request.
            e @ (StoreError::SchemaNotCurrent { .. } | StoreError::MigrationLockShared(_)) => {
                ApiError::Conflict(e.to_string())
            }
            e @ StoreError::Other(_) => ApiError::Internal(Box::new(e)),
        }
    }
}

/// An error body still missing the request's path and trace id, which only the outermost
/// layer knows.
#[derive(Debug, Clone)]
pub struct ErrorBody {
    pub status: StatusCode,
    pub error: &'static str,
    pub message: String,
    pub details: serde_json::Value,
}

impl ErrorBody {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            error: status.canonical_reason().unwrap_or("Error"),
            message: message.into(),
            details: json!({}),
        }
    }

    /// The complete body of docs/compatibility.md §3.
    pub fn to_json(&self, path: &str, trace_id: Option<&str>) -> serde_json::Value {
        json!({
            "error": self.error,
            "message": self.message,
            "path": path,
            "status": self.status.as_u16(),
            "traceId": trace_id,
            "details": self.details,
        })
    }

    /// A response with this status whose body the outermost layer fills in.
    pub fn into_response(self) -> Response {
        let mut response = Response::new(warp::hyper::Body::empty());
        *response.status_mut() = self.status;
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl ApiError {
    /// What the client is told. Causes of 401, 503 and 500 are logged here, never returned.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Validation(_) => "Request validation failed".into(),
            ApiError::OrderNotFound(what) => format!("Order not found: {what}"),
            ApiError::InvalidTransition { from, to } => {
                format!("Invalid status transition from {from} to {to}")
            }
            ApiError::CannotCancel(status) => format!("Cannot cancel order in status: {status}"),
            ApiError::BadRequest(message) | ApiError::Conflict(message) => message.clone(),
            ApiError::MalformedJson(reason) => format!("Malformed JSON request body: {reason}"),
            ApiError::UnreadableBody(reason) => format!("Unreadable request body: {reason}"),
            ApiError::MalformedConsistencyToken => "Malformed X-Consistency-Token header: send \
                                                    back the value a change answered, unmodified"
                .into(),
            ApiError::Unauthenticated(reason) => {
                tracing::info!(reason = %reason, "request rejected: authentication failed");
                "A valid bearer token is required".into()
            }
            ApiError::Forbidden(scope) => format!("The token lacks the scope {scope}"),
            ApiError::PayloadTooLarge(limit) => {
                format!("Request body must be at most {limit} bytes")
            }
            ApiError::UnsupportedMediaType => "Content-Type must be application/json".into(),
            ApiError::Unavailable(reason) => {
                tracing::warn!(reason = %reason, "service unavailable");
                "The service is temporarily unavailable; retry later".into()
            }
            ApiError::Internal(error) => {
                tracing::error!(error = %error, "unexpected error");
                INTERNAL_MESSAGE.into()
            }
        }
    }

    /// The `message` of this error as a GraphQL error, as the existing service words it.
    pub fn graphql_message(&self) -> String {
        match self {
            ApiError::Validation(_) => "Validation failed".into(),
            ApiError::Forbidden(_) => "Access denied".into(),
            other => other.public_message(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_)
            | ApiError::BadRequest(_)
            | ApiError::MalformedJson(_)
            | ApiError::UnreadableBody(_)
            | ApiError::MalformedConsistencyToken
            | ApiError::InvalidTransition { .. }
            | ApiError::CannotCancel(_) => StatusCode::BAD_REQUEST,
            ApiError::OrderNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The GraphQL `extensions.classification` of this error (docs/compatibility.md): the
    /// existing service knows only these four, so a conflict is a bad request and an outage
    /// an internal error.
    pub fn classification(&self) -> &'static str {
        match self.status() {
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "FORBIDDEN",
            status if status.is_client_error() => "BAD_REQUEST",
            _ => "INTERNAL_ERROR",
        }
    }

    /// The REST body of this error (still missing path and trace id).
    pub fn body(&self) -> ErrorBody {
        let mut body = ErrorBody::new(self.status(), self.public_message());
        match self {
            ApiError::Validation(errors) => {
                body.details = json!({ "validationErrors": errors });
            }
            ApiError::Unauthenticated(_) => body.error = "Authentication required",
            ApiError::Forbidden(scope) => {
                body.error = "Access denied";
                body.details = json!({ "requiredScope": scope });
            }
            _ => {}
        }
        body
    }
}

const INTERNAL_MESSAGE: &str = "An unexpected error occurred";

/// The opaque 500: nothing about the cause leaves the process.
pub fn internal() -> ErrorBody {
    ErrorBody::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE)
}

/// The one mapping from rejections to error responses.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, Infallible> {
    let body = if let Some(error) = rejection.find::<ApiError>() {
        error.body()
    } else if let Some(bad) = rejection.find::<async_graphql_warp::GraphQLBadRequest>() {
        // Before 405, so that an unreadable GraphQL body is answered as one whatever other
        // route also rejected the request.
        ErrorBody::new(bad.status(), format!("Not a GraphQL request: {bad}"))
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ErrorBody::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed for this resource",
        )
    } else if rejection.is_not_found() {
        ErrorBody::new(StatusCode::NOT_FOUND, "No such resource")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ErrorBody::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ErrorBody::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        )
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ErrorBody::new(StatusCode::LENGTH_REQUIRED, "Content-Length is required")
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some()
        || rejection.find::<warp::reject::InvalidHeader>().is_some()
        || rejection.find::<warp::reject::MissingHeader>().is_some()
    {
        ErrorBody::new(StatusCode::BAD_REQUEST, "Malformed request")
    } else {
        tracing::error!(rejection = ?rejection, "unhandled rejection");
        internal()
    };
    Ok(body.into_response())
}

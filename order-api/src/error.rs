//! The API's one error type and its one mapping to HTTP.
//!
//! Handlers and filters reject with [`ApiError`]; [`recover`] turns every rejection (ours and
//! warp's own: unknown route, wrong method) into a status and a pending [`ErrorBody`] carried in
//! the response's extensions. The outermost layer ([`crate::filters::finish`]) knows the
//! request path and trace id and writes the body, so every error has the same shape
//! (CONTRACT 3): `{error, message, path, status, traceId, details}`.

use std::convert::Infallible;

use order_store::{FieldError, StoreError};
use serde_json::json;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more invalid inputs; all of them are reported.
    #[error("Request validation failed")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    NotFound(String),
    /// A well-formed request the order's state refuses (a forbidden transition), or a body
    /// that is not JSON.
    #[error("{0}")]
    BadRequest(String),
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
            StoreError::NotFound(message) => ApiError::NotFound(message),
            e @ (StoreError::InvalidTransition { .. } | StoreError::CannotCancel(_)) => {
                ApiError::BadRequest(e.to_string())
            }
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Validation(errors) => ApiError::Validation(errors),
            StoreError::InvalidData(message) => ApiError::BadRequest(message),
            StoreError::Unavailable(message) => ApiError::Unavailable(message),
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

    /// The complete body of CONTRACT 3.
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
    pub fn body(&self) -> ErrorBody {
        match self {
            ApiError::Validation(errors) => ErrorBody {
                details: json!({ "validationErrors": errors }),
                ..ErrorBody::new(StatusCode::BAD_REQUEST, "Request validation failed")
            },
            ApiError::NotFound(message) => ErrorBody::new(StatusCode::NOT_FOUND, message.clone()),
            ApiError::BadRequest(message) => {
                ErrorBody::new(StatusCode::BAD_REQUEST, message.clone())
            }
            ApiError::Conflict(message) => ErrorBody::new(StatusCode::CONFLICT, message.clone()),
            ApiError::Unauthenticated(reason) => {
                tracing::info!(reason = %reason, "request rejected: authentication failed");
                ErrorBody {
                    error: "Authentication required",
                    ..ErrorBody::new(StatusCode::UNAUTHORIZED, "A valid bearer token is required")
                }
            }
            ApiError::Forbidden(scope) => ErrorBody {
                error: "Access denied",
                details: json!({ "requiredScope": scope }),
                ..ErrorBody::new(
                    StatusCode::FORBIDDEN,
                    format!("The token lacks the scope {scope}"),
                )
            },
            ApiError::PayloadTooLarge(limit) => ErrorBody::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body must be at most {limit} bytes"),
            ),
            ApiError::UnsupportedMediaType => ErrorBody::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ),
            ApiError::Unavailable(reason) => {
                tracing::warn!(reason = %reason, "database unavailable");
                ErrorBody::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The service is temporarily unavailable; retry later",
                )
            }
            ApiError::Internal(error) => {
                tracing::error!(error = %error, "unexpected error");
                internal()
            }
        }
    }
}

/// The opaque 500: nothing about the cause leaves the process.
pub fn internal() -> ErrorBody {
    ErrorBody::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "An unexpected error occurred",
    )
}

/// The one mapping from rejections to error responses.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, Infallible> {
    let body = if let Some(error) = rejection.find::<ApiError>() {
        error.body()
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
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some()
        || rejection.find::<warp::reject::InvalidHeader>().is_some()
        || rejection.find::<warp::reject::MissingHeader>().is_some()
        || rejection.find::<warp::reject::LengthRequired>().is_some()
    {
        ErrorBody::new(StatusCode::BAD_REQUEST, "Malformed request")
    } else {
        tracing::error!(rejection = ?rejection, "unhandled rejection");
        internal()
    };
    Ok(body.into_response())
}

//! The store's typed errors. Callers decide retry versus give-up with [`StoreError::is_transient`].

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::Serialize;

use crate::models::OrderStatus;

/// One invalid field, named as clients name it (camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The field error of a required value that is blank: the existing validators' word, which
/// clients show (docs/compatibility.md §3).
pub const REQUIRED: &str = "Required";

impl FieldError {
    /// The one rule for a required text: present and not blank. Returns the text as given.
    pub fn required<'a>(field: &str, text: Option<&'a str>) -> Result<&'a str, FieldError> {
        match text {
            Some(t) if !t.trim().is_empty() => Ok(t),
            _ => Err(FieldError::new(field, REQUIRED)),
        }
    }
}

/// What went wrong, said as what happened; order-api words it for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("order {0} not found")]
    NotFound(uuid::Uuid),
    /// The order's current status does not lead to the requested one.
    #[error("invalid status transition from {from} to {to}")]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
    /// The order's current status is past the point where it can be cancelled.
    #[error("cannot cancel an order in status {0}")]
    CannotCancel(OrderStatus),
    /// A fulfillment update that sets no field.
    #[error("fulfillment update without any field")]
    EmptyFulfillmentUpdate,
    /// Input fields the store refuses before running any statement.
    #[error("invalid fields: {}", describe_fields(.0))]
    Validation(Vec<FieldError>),
    /// The database refused a value of this input (SQLSTATE class 22 or a constraint): the same
    /// input will always fail, so it must not be retried like an outage.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The database cannot be reached or is shedding load: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Migrations are pending and this start was not asked to apply them.
    #[error(
        "the database schema is not current ({} pending migration(s): {}); \
         start with --migrate (ORDER_MIGRATE=true) or run \
         `diesel migration run --migration-dir migrations`",
        .pending.len(),
        .pending.join(", ")
    )]
    SchemaNotCurrent { pending: Vec<String> },
    /// The migration lock is not this session's alone: a pooler in transaction mode shares
    /// the server connection that holds it, so migrating through it is refused.
    #[error("{0}")]
    MigrationLockShared(String),
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

fn describe_fields(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join(", ")
}

impl StoreError {
    /// Whether the same call may succeed later without any change to its input.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Messages of data exceptions (SQLSTATE class 22) that diesel-async reports as `Unknown`.
const DATA_ERROR_MESSAGES: &[&str] = &[
    "invalid byte sequence",
    "unsupported unicode escape sequence",
    "null character not permitted",
    "value too long for type",
    "numeric field overflow",
    "out of range",
    "invalid input syntax",
];

/// Messages of server errors that end the connection or shed load. diesel-async keeps only
/// the message of errors it maps to `Unknown`, so the SQLSTATE classes 08, 53, 57 and 40
/// (connection, resources, operator intervention, rollback) are recognised by their text.
const TRANSIENT_SERVER_MESSAGES: &[&str] = &[
    "terminating connection",
    "the database system is",
    "too many connections",
    "remaining connection slots",
    "deadlock detected",
    "could not serialize",
    "canceling statement due to",
    "server closed the connection",
    "connection reset",
    "connection refused",
];

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        match &error {
            DieselError::DatabaseError(kind, info) => match kind {
                DatabaseErrorKind::UnableToSendCommand
                | DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::SerializationFailure
                | DatabaseErrorKind::ReadOnlyTransaction => {
                    StoreError::Unavailable(info.message().to_owned())
                }
                _ if is_transient_message(info.message()) => {
                    StoreError::Unavailable(info.message().to_owned())
                }
                DatabaseErrorKind::CheckViolation | DatabaseErrorKind::NotNullViolation => {
                    StoreError::InvalidData(info.message().to_owned())
                }
                _ if is_data_message(info.message()) => {
                    StoreError::InvalidData(info.message().to_owned())
                }
                _ => StoreError::Other(Box::new(error)),
            },
            DieselError::BrokenTransactionManager => StoreError::Unavailable(error.to_string()),
            _ => StoreError::Other(Box::new(error)),
        }
    }
}

fn is_data_message(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    DATA_ERROR_MESSAGES.iter().any(|m| message.contains(m))
}

fn is_transient_message(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    TRANSIENT_SERVER_MESSAGES
        .iter()
        .any(|m| message.contains(m))
}

impl From<diesel::ConnectionError> for StoreError {
    fn from(error: diesel::ConnectionError) -> Self {
        // Bad credentials or an unknown database are as unreachable as a closed port:
        // the fix is outside this process, and retrying lets it recover once it is made.
        StoreError::Unavailable(with_causes(&error))
    }
}

/// The error and each cause it wraps that adds something, on one line ("error connecting to
/// server: Connection refused", "invalid peer certificate: UnknownIssuer"): connection and TLS
/// errors keep the useful part in their sources.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.replace('\n', " ")
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for StoreError {
    fn from(error: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        match error {
            bb8::RunError::TimedOut => {
                StoreError::Unavailable("timed out waiting for a database connection".into())
            }
            bb8::RunError::User(e) => StoreError::Unavailable(with_causes(&e)),
        }
    }
}

impl From<diesel_migrations::MigrationError> for StoreError {
    fn from(error: diesel_migrations::MigrationError) -> Self {
        StoreError::Other(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(message: &str) -> StoreError {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message.to_owned())).into()
    }

    #[test]
    fn data_exceptions_are_permanent_and_outages_transient() {
        for message in [
            "invalid byte sequence for encoding \"UTF8\": 0x00",
            "value too long for type character varying(50)",
            "numeric field overflow",
        ] {
            let error = server_error(message);
            assert!(
                matches!(error, StoreError::InvalidData(_)),
                "{message}: {error:?}"
            );
            assert!(!error.is_transient());
        }
        let outage = server_error("terminating connection due to administrator command");
        assert!(outage.is_transient());
        let closed: StoreError = DieselError::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand,
            Box::new("connection closed".to_owned()),
        )
        .into();
        assert!(closed.is_transient());
    }
}

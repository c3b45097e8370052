//! The input rules, written once for REST and GraphQL, with the existing validators' messages
//! (docs/compatibility.md, "Validation messages").
//!
//! Each rule parses raw input into the value the service needs (`Field<T>`); a request's
//! fields are combined with [`Collect`], which yields every value or every error, so that a
//! client learns about all of its mistakes at once and no caller handles a value that
//! validation already ruled out.

use chrono::{DateTime, Utc};
use order_store::orders::{FulfillmentUpdate, OrderFilter};
use order_store::{FieldError, OrderStatus};
use uuid::Uuid;

use crate::error::ApiError;

pub use order_store::error::REQUIRED;
/// A fulfillment update that changes nothing.
pub const FULFILLMENT_INPUT: &str = "At least one field must be provided";
pub const UUID: &str = "Must be a valid UUID";
pub const STORE_NUMBER: &str = "Must be between 1 and 2000";
pub const PAGE_SIZE: &str = "Must be between 1 and 100";
pub const NOT_NEGATIVE: &str = "Must be non-negative";
pub const POSITIVE: &str = "Must be positive";
pub const STATUS: &str = "Invalid status value";
pub const DATE_RANGE: &str = "Start date must be before end date";
/// Checks the existing service did not make, worded in the same style.
pub const INSTANT: &str = "Must be a valid ISO-8601 instant";
pub const STRING: &str = "Must be a string";
/// PostgreSQL text cannot hold U+0000: such input is refused instead of failing the query.
pub const NUL: &str = order_store::models::NUL_MESSAGE;

/// Longest free text (cancel reason, note, fulfillment fields) accepted.
pub const MAX_TEXT: usize = 10_000;
/// Longest `orderNumber` and `customerId`, as the table's columns.
pub const MAX_ORDER_NUMBER: usize = 50;
pub const MAX_CUSTOMER_ID: usize = 100;

/// One parsed input, or why it is invalid.
pub type Field<T> = Result<T, FieldError>;

fn invalid<T>(field: &str, message: impl Into<String>) -> Field<T> {
    Err(FieldError::new(field, message))
}

/// An order id: blank or absent is `Required`, anything else that is not a UUID is invalid.
pub fn order_id(field: &str, text: Option<&str>) -> Field<Uuid> {
    let t = FieldError::required(field, text)?.trim();
    Uuid::try_parse(t).or_else(|_| invalid(field, UUID))
}

pub fn store_number(field: &str, n: i64) -> Field<i32> {
    match i32::try_from(n) {
        Ok(n) if order_store::models::STORE_NUMBERS.contains(&n) => Ok(n),
        _ => invalid(field, STORE_NUMBER),
    }
}

/// A store number from a path segment or query parameter.
pub fn store_number_text(field: &str, text: &str) -> Field<i32> {
    text.trim()
        .parse::<i64>()
        .map_or_else(|_| invalid(field, STORE_NUMBER), |n| store_number(field, n))
}

/// A required, non-blank string of at most `max` characters, without U+0000.
pub fn required(field: &str, text: Option<&str>, max: usize) -> Field<String> {
    let t = FieldError::required(field, text)?;
    bounded_text(field, t, max).map(str::to_owned)
}

/// Optional free text: absent stays absent; present text is bounded and NUL-free.
pub fn optional_text(field: &str, text: Option<&str>, max: usize) -> Field<Option<String>> {
    text.map(|t| bounded_text(field, t, max).map(str::to_owned))
        .transpose()
}

/// Optional text that is dropped when blank (search filters): a blank filter filters nothing.
pub fn optional_filter(field: &str, text: Option<&str>, max: usize) -> Field<Option<String>> {
    optional_text(field, text.filter(|t| !t.trim().is_empty()), max)
}

fn bounded_text<'a>(field: &str, text: &'a str, max: usize) -> Field<&'a str> {
    if order_store::models::has_nul(text) {
        invalid(field, NUL)
    } else if text.chars().count() > max {
        invalid(field, format!("Must be at most {max} characters"))
    } else {
        Ok(text)
    }
}

/// A status name, case-insensitive; blank or absent is `Required`.
pub fn status(field: &str, text: Option<&str>) -> Field<OrderStatus> {
    let t = FieldError::required(field, text)?.trim();
    OrderStatus::parse_ignore_case(t).or_else(|_| invalid(field, STATUS))
}

/// An optional status filter (blank means none).
pub fn optional_status(field: &str, text: Option<&str>) -> Field<Option<OrderStatus>> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| status(field, Some(t)))
        .transpose()
}

/// An optional ISO-8601 instant (blank means none).
pub fn optional_instant(field: &str, text: Option<&str>) -> Field<Option<DateTime<Utc>>> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| order_store::models::instant::parse(t).or_else(|_| invalid(field, INSTANT)))
        .transpose()
}

/// `startDate` not after `endDate`; reported only when both parsed.
pub fn date_range(
    start: &Field<Option<DateTime<Utc>>>,
    end: &Field<Option<DateTime<Utc>>>,
) -> Field<()> {
    match (start, end) {
        (Ok(Some(start)), Ok(Some(end))) if start > end => invalid("dateRange", DATE_RANGE),
        _ => Ok(()),
    }
}

/// An integer in `range`, or `default` when absent.
pub fn int_in(
    field: &str,
    n: Option<i64>,
    range: std::ops::RangeInclusive<i64>,
    default: i64,
    message: &str,
) -> Field<i64> {
    match n {
        None => Ok(default),
        Some(n) if range.contains(&n) => Ok(n),
        Some(_) => invalid(field, message),
    }
}

/// [`int_in`] for a query parameter; text that is not an integer breaks the same rule.
pub fn int_text_in(
    field: &str,
    text: Option<&str>,
    range: std::ops::RangeInclusive<i64>,
    default: i64,
    message: &str,
) -> Field<i64> {
    match text.map(|t| t.trim().parse::<i64>()) {
        None => Ok(default),
        Some(Ok(n)) => int_in(field, Some(n), range, default, message),
        Some(Err(_)) => invalid(field, message),
    }
}

/// A page: `limit` orders after skipping `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub offset: i64,
    pub limit: i64,
}

/// A search: the filter and the page of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub filter: OrderFilter,
    pub window: Window,
}

/// How a search names its page: REST by page number, GraphQL by orders to skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Pages,
    Orders,
}

/// The search rules shared by REST `GET /orders` and GraphQL `searchOrders`.
#[allow(clippy::too_many_arguments)]
pub fn search_query(
    store_number: Field<Option<i32>>,
    customer_id: Field<Option<String>>,
    status: Field<Option<OrderStatus>>,
    start: Field<Option<DateTime<Utc>>>,
    end: Field<Option<DateTime<Utc>>>,
    skip: Field<i64>,
    limit: Field<i64>,
    unit: Skip,
) -> Result<SearchQuery, ApiError> {
    let range = date_range(&start, &end);
    let (store_number, customer_id, status, created_from, created_to, (), skip, limit) = (
        store_number,
        customer_id,
        status,
        start,
        end,
        range,
        skip,
        limit,
    )
        .collect()?;
    let offset = match unit {
        Skip::Pages => skip.saturating_mul(limit),
        Skip::Orders => skip,
    };
    Ok(SearchQuery {
        filter: OrderFilter {
            store_number,
            customer_id,
            status,
            created_from,
            created_to,
        },
        window: Window { offset, limit },
    })
}

/// `updateFulfillment`'s input for order `id`: at least one field must be given (a given
/// but invalid field counts as given, and is reported as itself).
pub fn fulfillment_update(
    id: Field<Uuid>,
    fulfillment_date: Field<Option<DateTime<Utc>>>,
    pickup_location: Field<Option<String>>,
    instructions: Field<Option<String>>,
    any_given: bool,
) -> Result<(Uuid, FulfillmentUpdate), ApiError> {
    let given = if any_given {
        Ok(())
    } else {
        invalid("input", FULFILLMENT_INPUT)
    };
    let (id, fulfillment_date, pickup_location, instructions, ()) =
        (id, fulfillment_date, pickup_location, instructions, given).collect()?;
    Ok((
        id,
        FulfillmentUpdate {
            fulfillment_date,
            pickup_location,
            instructions,
        },
    ))
}

/// An order id with the one required text of a cancel (`reason`) or a note (`note`).
pub fn id_and_text(
    id: Field<Uuid>,
    field: &str,
    text: Field<Option<String>>,
) -> Result<(Uuid, String), ApiError> {
    let text = text.and_then(|t| required(field, t.as_deref(), MAX_TEXT));
    (id, text).collect()
}

/// Every value of a tuple of [`Field`]s, or one validation failure listing every error.
pub trait Collect {
    type Output;
    fn collect(self) -> Result<Self::Output, ApiError>;
}

macro_rules! collect_tuple {
    ($($name:ident),+) => {
        impl<$($name),+> Collect for ($(Field<$name>,)+) {
            type Output = ($($name,)+);

            #[allow(non_snake_case)]
            fn collect(self) -> Result<Self::Output, ApiError> {
                let ($($name,)+) = self;
                match ($($name,)+) {
                    ($(Ok($name),)+) => Ok(($($name,)+)),
                    ($($name,)+) => {
                        let mut errors = Vec::new();
                        $(if let Err(e) = $name { errors.push(e); })+
                        Err(ApiError::Validation(errors))
                    }
                }
            }
        }
    };
}

collect_tuple!(A);
collect_tuple!(A, B);
collect_tuple!(A, B, C);
collect_tuple!(A, B, C, D);
collect_tuple!(A, B, C, D, E);
collect_tuple!(A, B, C, D, E, F);
collect_tuple!(A, B, C, D, E, F, G);
collect_tuple!(A, B, C, D, E, F, G, H);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_blank_is_required_and_garbage_is_invalid() {
        assert_eq!(order_id("id", None).unwrap_err().message, REQUIRED);
        assert_eq!(order_id("id", Some("  ")).unwrap_err().message, REQUIRED);
        assert_eq!(order_id("id", Some("nope")).unwrap_err().message, UUID);
        assert!(order_id("id", Some(" 9b2e4c6a-1f3d-4e8b-a7c5-2d9f1e3b5a70 ")).is_ok());
    }

    #[test]
    fn collect_reports_every_error_in_order() {
        let result = (
            order_id("orderId", Some("x")),
            store_number("storeNumber", 0),
            Ok::<_, FieldError>(1),
        )
            .collect();
        let Err(ApiError::Validation(errors)) = result else {
            panic!("expected a validation failure");
        };
        assert_eq!(
            errors,
            vec![
                FieldError::new("orderId", UUID),
                FieldError::new("storeNumber", STORE_NUMBER)
            ]
        );
    }

    #[test]
    fn date_range_needs_both_ends() {
        let early = Ok(Some(Utc::now() - chrono::Duration::days(1)));
        let late = Ok(Some(Utc::now()));
        assert!(date_range(&early, &late).is_ok());
        assert_eq!(date_range(&late, &early).unwrap_err().message, DATE_RANGE);
        assert!(date_range(&late, &Ok(None)).is_ok());
    }
}

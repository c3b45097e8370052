//! Input checks with the contract's messages (CONTRACT 3). Every check adds to one list, so a
//! client learns about all of its mistakes at once.

use chrono::{DateTime, Utc};
use order_store::{FieldError, OrderStatus};
use uuid::Uuid;

use crate::error::ApiError;

pub const UUID: &str = "Must be a valid UUID";
pub const STORE_NUMBER: &str = "Must be between 1 and 2000";
pub const REQUIRED: &str = "Required";
pub const SIZE: &str = "Must be between 1 and 100";
pub const NOT_NEGATIVE: &str = "Must be greater than or equal to 0";
pub const POSITIVE: &str = "Must be greater than or equal to 1";
pub const STATUS: &str = "Invalid status value";
pub const INSTANT: &str = "Must be an ISO-8601 instant";
pub const DATE_RANGE: &str = "startDate must not be after endDate";
pub const STRING: &str = "Must be a string";
/// PostgreSQL text cannot hold U+0000: such input is refused instead of failing the query.
pub const NUL: &str = order_store::models::NUL_MESSAGE;
pub const FULFILLMENT_INPUT: &str =
    "At least one of fulfillmentDate, pickupLocation, instructions is required";

/// The errors found so far.
#[derive(Debug, Default)]
pub struct Checks {
    errors: Vec<FieldError>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }

    /// `Ok` when nothing was wrong, else every error as one validation failure.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }

    pub fn uuid(&mut self, field: &str, text: &str) -> Option<Uuid> {
        let parsed = Uuid::try_parse(text.trim()).ok();
        if parsed.is_none() {
            self.add(field, UUID);
        }
        parsed
    }

    pub fn store_number_text(&mut self, field: &str, text: &str) -> Option<i32> {
        if let Ok(n) = text.trim().parse::<i64>() {
            self.store_number(field, n)
        } else {
            self.add(field, STORE_NUMBER);
            None
        }
    }

    pub fn store_number(&mut self, field: &str, n: i64) -> Option<i32> {
        match i32::try_from(n) {
            Ok(n) if order_store::models::STORE_NUMBERS.contains(&n) => Some(n),
            _ => {
                self.add(field, STORE_NUMBER);
                None
            }
        }
    }

    /// A required, non-blank string of at most `max` characters, without U+0000.
    pub fn required(&mut self, field: &str, text: Option<&str>, max: usize) -> Option<String> {
        match text {
            Some(t) if !t.trim().is_empty() => {
                if order_store::models::has_nul(t) {
                    self.add(field, NUL);
                    None
                } else if t.chars().count() > max {
                    self.add(field, format!("Must be at most {max} characters"));
                    None
                } else {
                    Some(t.to_owned())
                }
            }
            _ => {
                self.add(field, REQUIRED);
                None
            }
        }
    }

    /// An optional free-text value: refused when it holds U+0000.
    pub fn text<'a>(&mut self, field: &str, text: Option<&'a str>) -> Option<&'a str> {
        match text {
            Some(t) if order_store::models::has_nul(t) => {
                self.add(field, NUL);
                None
            }
            other => other,
        }
    }

    pub fn status(&mut self, field: &str, text: &str) -> Option<OrderStatus> {
        let parsed = OrderStatus::parse_ignore_case(text.trim()).ok();
        if parsed.is_none() {
            self.add(field, STATUS);
        }
        parsed
    }

    pub fn instant(&mut self, field: &str, text: &str) -> Option<DateTime<Utc>> {
        let parsed = order_store::models::instant::parse(text.trim()).ok();
        if parsed.is_none() {
            self.add(field, INSTANT);
        }
        parsed
    }

    /// An integer query parameter in `min..=max`, or `default` when absent.
    pub fn int_in(
        &mut self,
        field: &str,
        text: Option<&str>,
        min: i64,
        max: i64,
        default: i64,
        message: &str,
    ) -> Option<i64> {
        let Some(text) = text else {
            return Some(default);
        };
        match text.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.add(field, message);
                None
            }
        }
    }

    pub fn date_range(&mut self, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) {
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                self.add("dateRange", DATE_RANGE);
            }
        }
    }
}

/// A path segment with its percent-escapes decoded (warp hands segments over raw); bytes that
/// are not UTF-8 become U+FFFD, which then fails validation instead of the request.
pub fn decode_path(segment: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::decode_path;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode_path("ORD%2042"), "ORD 42");
        assert_eq!(decode_path("%20%20"), "  ");
        assert_eq!(decode_path("a%2"), "a%2");
        assert_eq!(decode_path("%zz"), "%zz");
        assert_eq!(decode_path("%FF"), "\u{FFFD}");
        assert_eq!(decode_path("plain"), "plain");
    }
}

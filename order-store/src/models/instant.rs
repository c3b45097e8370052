//! Instants as Java writes them.
//!
//! Jackson writes an `Instant` as ISO-8601 UTC with 0, 3, 6 or 9 fraction digits, and
//! `OffsetDateTime.toString()` drops the seconds when they and the fraction are zero
//! (`2025-12-13T16:44Z`). Both are accepted; output uses the same 0/3/6/9-digit form.

use chrono::{DateTime, FixedOffset, NaiveDateTime, SecondsFormat, Utc};
use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

/// Parses an ISO-8601 instant with an offset (`Z`, `+01:00`), seconds optional.
pub fn parse(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    // Seconds omitted: `2025-12-13T16:44Z` or `2025-12-13T16:44+01:00`.
    let (local, offset) = split_offset(text).ok_or_else(|| invalid(text))?;
    let naive =
        NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M").map_err(|_| invalid(text))?;
    let offset = if offset.eq_ignore_ascii_case("z") {
        FixedOffset::east_opt(0)
    } else {
        DateTime::parse_from_str(
            &format!("2000-01-01T00:00:00{offset}"),
            "%Y-%m-%dT%H:%M:%S%:z",
        )
        .ok()
        .map(|t| *t.offset())
    }
    .ok_or_else(|| invalid(text))?;
    naive
        .and_local_timezone(offset)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| invalid(text))
}

fn split_offset(text: &str) -> Option<(&str, &str)> {
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return Some((local, "Z"));
    }
    let at = text.len().checked_sub(6)?;
    let offset = text.get(at..)?;
    (offset.starts_with(['+', '-']) && offset.as_bytes()[3] == b':').then(|| (&text[..at], offset))
}

fn invalid(text: &str) -> String {
    format!("not an ISO-8601 instant: {text:?}")
}

/// The instant in UTC with `Z` and 0, 3, 6 or 9 fraction digits.
pub fn format(value: &DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn serialize<S: Serializer>(value: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(value))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    parse(&text).map_err(D::Error::custom)
}

/// `#[serde(with = "instant::option")]` for a nullable instant.
pub mod option {
    use chrono::{DateTime, Utc};
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(t) => serializer.serialize_str(&super::format(t)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<std::borrow::Cow<'de, str>>::deserialize(deserializer)?
            .map(|text| super::parse(&text).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_forms_parse() {
        for (text, expected) in [
            ("2025-12-13T16:44:36Z", "2025-12-13T16:44:36Z"),
            ("2025-12-13T16:44:36.123Z", "2025-12-13T16:44:36.123Z"),
            ("2025-12-13T16:44:36.123456Z", "2025-12-13T16:44:36.123456Z"),
            (
                "2025-12-13T16:44:36.123456789Z",
                "2025-12-13T16:44:36.123456789Z",
            ),
            ("2025-12-13T16:44:36.7Z", "2025-12-13T16:44:36.700Z"),
            ("2025-12-13T16:44Z", "2025-12-13T16:44:00Z"),
            ("2025-12-13T16:44+01:00", "2025-12-13T15:44:00Z"),
            (
                "2025-12-13T16:44:36.512847-05:00",
                "2025-12-13T21:44:36.512847Z",
            ),
        ] {
            assert_eq!(format(&parse(text).unwrap()), expected, "{text}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "",
            "Z",
            "+01:00",
            "2025-13-01T00:00Z",
            "yesterday",
            "2025-12-13T16:44+1:00x",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }
}

//! Money as an exact decimal.
//!
//! Checkout prints money the way Java prints a `double` (`10.0`, `0`, `1.2345678E7`), so the
//! JSON number's source text is read straight into a [`BigDecimal`] (serde_json's
//! `arbitrary_precision` keeps that text); nothing here ever holds money in a binary float.
//! On output every amount has exactly two decimals, as `NUMERIC(12,2)` stores it.

use std::str::FromStr;

use bigdecimal::{BigDecimal, RoundingMode};
use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

/// The largest magnitude `NUMERIC(12,2)` holds is 10^10 - 0.01.
const MAX_INTEGER_DIGITS: i64 = 10;
/// Cents: `NUMERIC(12,2)` would silently round a third decimal, so one is refused instead.
pub const SCALE: i64 = 2;

/// Parses the text of a JSON number (or any decimal literal, exponent allowed) exactly.
pub fn parse(text: &str) -> Result<BigDecimal, String> {
    BigDecimal::from_str(text.trim()).map_err(|e| format!("not a decimal number: {text:?} ({e})"))
}

/// Whether `value` fits `NUMERIC(12,2)` without rounding.
pub fn check_fits(value: &BigDecimal) -> Result<(), String> {
    let normalized = value.normalized();
    if normalized.fractional_digit_count() > SCALE {
        return Err(format!("{value} has more than {SCALE} decimals"));
    }
    let (digits, scale) = normalized.as_bigint_and_exponent();
    let integer_digits = digits.to_string().trim_start_matches('-').len() as i64 - scale;
    if integer_digits > MAX_INTEGER_DIGITS {
        return Err(format!("{value} does not fit NUMERIC(12,2)"));
    }
    Ok(())
}

/// Whether `value`'s integer part fits `NUMERIC(12,2)` (any number of decimals): the bound for
/// amounts that are rounded rather than stored as they are, so that an absurd exponent is
/// refused before rounding would expand it into billions of digits.
pub fn check_magnitude(value: &BigDecimal) -> Result<(), String> {
    let (digits, scale) = value.as_bigint_and_exponent();
    // Decimal digits of the unscaled integer, estimated from its bit length without printing a
    // number that may be huge: bits × log10(2), with log10(2) < 0.30103, rounded up. Integer
    // arithmetic only; an estimate near the bound is followed by an exact count below.
    let digit_count = (digits.bits().saturating_mul(30_103)).div_ceil(100_000) as i64;
    if digit_count - scale > MAX_INTEGER_DIGITS + 1 {
        return Err("the amount does not fit NUMERIC(12,2)".to_owned());
    }
    if digit_count - scale > MAX_INTEGER_DIGITS {
        // Near the bound: count exactly.
        let integer_digits = digits.to_string().trim_start_matches('-').len() as i64 - scale;
        if integer_digits > MAX_INTEGER_DIGITS {
            return Err(format!("{value} does not fit NUMERIC(12,2)"));
        }
    }
    Ok(())
}

/// The amount with exactly two decimals, as clients of the existing service see it.
pub fn format(value: &BigDecimal) -> String {
    value
        .with_scale_round(SCALE, RoundingMode::HalfEven)
        .to_plain_string()
}

fn to_json_number(value: &BigDecimal) -> serde_json::Number {
    // `format` yields a plain decimal literal ("-12.30"), which is always a valid JSON number,
    // and with `arbitrary_precision` the number keeps that exact text.
    serde_json::Number::from_str(&format(value)).unwrap_or_else(|_| serde_json::Number::from(0))
}

/// `#[serde(with = "money")]` for a required amount.
pub fn serialize<S: Serializer>(value: &BigDecimal, serializer: S) -> Result<S::Ok, S::Error> {
    to_json_number(value).serialize(serializer)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BigDecimal, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    parse(&number.to_string()).map_err(D::Error::custom)
}

/// `#[serde(with = "money::option")]` for a nullable amount.
pub mod option {
    use super::{parse, to_json_number, BigDecimal};
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<BigDecimal>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_ref().map(to_json_number).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<BigDecimal>, D::Error> {
        Option::<serde_json::Number>::deserialize(deserializer)?
            .map(|n| parse(&n.to_string()).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_publisher_form_is_exact() {
        for (text, expected) in [
            ("1E+1", "10.00"),
            ("0", "0.00"),
            ("10.00", "10.00"),
            ("10.0", "10.00"),
            ("1234567890.12", "1234567890.12"),
            ("1.2345678E7", "12345678.00"),
            ("2.222222123E7", "22222221.23"),
            ("0.01", "0.01"),
            ("4.4", "4.40"),
        ] {
            let value = parse(text).unwrap();
            check_fits(&value).unwrap();
            assert_eq!(format(&value), expected, "{text}");
        }
    }

    #[test]
    fn values_that_do_not_fit_are_refused() {
        assert!(check_fits(&parse("1.005").unwrap()).is_err());
        assert!(check_fits(&parse("10000000000").unwrap()).is_err());
        assert!(check_fits(&parse("9999999999.99").unwrap()).is_ok());
        assert!(check_fits(&parse("-9999999999.99").unwrap()).is_ok());
        assert!(check_fits(&parse("1.0E10").unwrap()).is_err());
    }

    #[test]
    fn json_round_trip_keeps_the_text() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Amount {
            #[serde(with = "super")]
            v: BigDecimal,
        }
        let a: Amount = serde_json::from_str(r#"{"v":1.2345678E7}"#).unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"v":12345678.00}"#);
    }
}

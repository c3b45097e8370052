//! Reading the `JSONB` columns straight into their typed structs.
//!
//! diesel maps `Jsonb` to `serde_json::Value`; going through a `Value` for every row read
//! would build a tree only to throw it away, so these wrappers parse the column's bytes
//! directly. They are only `deserialize_as` helpers for [`super::Order`].

use diesel::deserialize::{self, FromSql, Queryable};
use diesel::pg::{Pg, PgValue};
use diesel::sql_types::{Jsonb, Nullable};
use serde::de::DeserializeOwned;

use super::{AppliedDiscount, CustomerSnapshot, FulfillmentDetails, LineItem};

/// A non-null `JSONB` column parsed as `T`.
#[derive(Debug)]
pub struct JsonbColumn<T>(pub T);

/// A nullable `JSONB` column parsed as `Option<T>`.
#[derive(Debug)]
pub struct NullableJsonbColumn<T>(pub Option<T>);

fn parse<T: DeserializeOwned>(value: &PgValue<'_>) -> deserialize::Result<T> {
    // PostgreSQL's binary JSONB format is a version byte (1) followed by the JSON text.
    match value.as_bytes().split_first() {
        Some((1, json)) => Ok(serde_json::from_slice(json)?),
        _ => Err("unsupported JSONB encoding version".into()),
    }
}

impl<T: DeserializeOwned> FromSql<Jsonb, Pg> for JsonbColumn<T> {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        parse(&value).map(Self)
    }
}

impl<T: DeserializeOwned> FromSql<Nullable<Jsonb>, Pg> for NullableJsonbColumn<T> {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        parse(&value).map(|v| Self(Some(v)))
    }

    fn from_nullable_sql(value: Option<PgValue<'_>>) -> deserialize::Result<Self> {
        value.map_or(Ok(Self(None)), Self::from_sql)
    }
}

// diesel reads a single column into a type through `Queryable`; these forward to `FromSql`.
impl<T: DeserializeOwned> Queryable<Jsonb, Pg> for JsonbColumn<T> {
    type Row = Self;
    fn build(row: Self) -> deserialize::Result<Self> {
        Ok(row)
    }
}

impl<T: DeserializeOwned> Queryable<Nullable<Jsonb>, Pg> for NullableJsonbColumn<T> {
    type Row = Self;
    fn build(row: Self) -> deserialize::Result<Self> {
        Ok(row)
    }
}

macro_rules! unwrap_into {
    ($wrapper:ident < $inner:ty > => $target:ty) => {
        impl From<$wrapper<$inner>> for $target {
            fn from(column: $wrapper<$inner>) -> Self {
                column.0
            }
        }
    };
}

unwrap_into!(JsonbColumn<Vec<LineItem>> => Vec<LineItem>);
unwrap_into!(JsonbColumn<Vec<AppliedDiscount>> => Vec<AppliedDiscount>);
unwrap_into!(NullableJsonbColumn<CustomerSnapshot> => Option<CustomerSnapshot>);
unwrap_into!(NullableJsonbColumn<FulfillmentDetails> => Option<FulfillmentDetails>);

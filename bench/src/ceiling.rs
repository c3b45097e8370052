//! The two insert forms of the ceiling that diesel cannot write: one `INSERT ... SELECT FROM
//! unnest(...)` with one array parameter per column, and binary `COPY` into a temporary table
//! followed by `INSERT ... SELECT ... ON CONFLICT DO NOTHING`. Both go through tokio-postgres
//! directly, with binary encoders of their own for the column types tokio-postgres has no
//! encoder for without its `with-*` features (uuid, timestamptz, numeric, jsonb), so that the
//! workspace's dependency features stay as they are.

use std::error::Error;
use std::pin::pin;

use anyhow::Context as _;
use bigdecimal::BigDecimal;
use bytes::{BufMut as _, BytesMut};
use chrono::{DateTime, Utc};
use diesel::pg::data_types::PgNumeric;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use crate::Row;

type BoxError = Box<dyn Error + Sync + Send>;

/// `uuid`: its 16 bytes (also the floor server's parameter).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PgUuid(pub(crate) Uuid);

impl ToSql for PgUuid {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }
    to_sql_checked!();
}

/// `timestamptz`: microseconds since 2000-01-01 00:00:00 UTC.
#[derive(Debug, Clone, Copy)]
struct PgTimestamp(DateTime<Utc>);

/// 2000-01-01T00:00:00Z in Unix microseconds.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

impl ToSql for PgTimestamp {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_i64(self.0.timestamp_micros() - PG_EPOCH_UNIX_MICROS);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
    to_sql_checked!();
}

/// `numeric`: diesel's own conversion to base-10000 digits, in the wire layout
/// (ndigits, weight, sign, dscale, digits).
#[derive(Debug, Clone)]
struct PgDecimal(PgNumeric);

impl PgDecimal {
    fn new(value: &BigDecimal) -> Self {
        Self(PgNumeric::from(value))
    }
}

impl ToSql for PgDecimal {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let (sign, weight, scale, digits): (u16, i16, u16, &[i16]) = match &self.0 {
            PgNumeric::Positive {
                weight,
                scale,
                digits,
            } => (0x0000, *weight, *scale, digits),
            PgNumeric::Negative {
                weight,
                scale,
                digits,
            } => (0x4000, *weight, *scale, digits),
            PgNumeric::NaN => (0xC000, 0, 0, &[]),
        };
        out.put_i16(i16::try_from(digits.len())?);
        out.put_i16(weight);
        out.put_u16(sign);
        out.put_u16(scale);
        for d in digits {
            out.put_i16(*d);
        }
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
    to_sql_checked!();
}

/// `jsonb`: format version 1, then the JSON text.
#[derive(Debug, Clone)]
struct PgJsonb<'a>(&'a serde_json::Value);

impl ToSql for PgJsonb<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_u8(1);
        serde_json::to_writer(out.writer(), self.0)?;
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
    to_sql_checked!();
}

/// The columns of `orders` in table order, as `order-bench` names and casts them.
const COLUMNS: &str = "id, store_number, order_number, customer_id, fulfillment_type, \
    fulfillment_date, reservation_id, subtotal, discount_total, tax_total, fulfillment_cost, \
    grand_total, payment_status, payment_method, payment_reference, status, line_items, \
    applied_discounts, customer_snapshot, fulfillment_details, created_at, updated_at, \
    created_by, session_id";

/// The unnest statement: one typed array parameter per column, in table order.
fn unnest_sql() -> String {
    const TYPES: [&str; 24] = [
        "uuid",
        "int4",
        "varchar",
        "varchar",
        "varchar",
        "timestamptz",
        "uuid",
        "numeric",
        "numeric",
        "numeric",
        "numeric",
        "numeric",
        "varchar",
        "varchar",
        "varchar",
        "varchar",
        "jsonb",
        "jsonb",
        "jsonb",
        "jsonb",
        "timestamptz",
        "timestamptz",
        "varchar",
        "uuid",
    ];
    let arrays = TYPES
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO orders ({COLUMNS}) SELECT * FROM unnest({arrays}) \
         ON CONFLICT DO NOTHING RETURNING id"
    )
}

/// One client per connection, its statement prepared once (as diesel caches its own).
pub struct Ceiling {
    client: Client,
    statement: Statement,
    copy_types: Vec<Type>,
    mode: Form,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Unnest,
    Copy,
}

/// The temporary table of the copy form: created once per connection, emptied by every
/// commit (`ON COMMIT DELETE ROWS`), so a batch costs no catalog work.
const COPY_TABLE: &str = "bench_copy";

impl Ceiling {
    pub async fn connect(url: &str, mode: Form) -> anyhow::Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .context("cannot connect to the benchmark database")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("order-bench: connection error: {e}");
            }
        });
        let (statement, copy_types) = match mode {
            Form::Unnest => (
                client
                    .prepare(&unnest_sql())
                    .await
                    .context("preparing the unnest INSERT")?,
                Vec::new(),
            ),
            Form::Copy => {
                client
                    .batch_execute(&format!(
                        "CREATE TEMP TABLE {COPY_TABLE} (LIKE orders INCLUDING DEFAULTS) \
                         ON COMMIT DELETE ROWS"
                    ))
                    .await
                    .context("creating the temporary table")?;
                let types = client
                    .prepare(&format!("SELECT {COLUMNS} FROM {COPY_TABLE}"))
                    .await
                    .context("reading the temporary table's column types")?
                    .columns()
                    .iter()
                    .map(|c| c.type_().clone())
                    .collect();
                let insert = client
                    .prepare(&format!(
                        "INSERT INTO orders ({COLUMNS}) SELECT {COLUMNS} FROM {COPY_TABLE} \
                         ON CONFLICT DO NOTHING RETURNING id"
                    ))
                    .await
                    .context("preparing the INSERT ... SELECT")?;
                (insert, types)
            }
        };
        Ok(Self {
            client,
            statement,
            copy_types,
            mode,
        })
    }

    /// Inserts `rows` (one batch); returns how many were new.
    pub async fn insert(&mut self, rows: &[Row]) -> anyhow::Result<usize> {
        match self.mode {
            Form::Unnest => self.unnest(rows).await,
            Form::Copy => self.copy(rows).await,
        }
    }

    async fn unnest(&self, rows: &[Row]) -> anyhow::Result<usize> {
        fn col<'a, T>(rows: &'a [Row], f: impl Fn(&'a Row) -> T) -> Vec<T> {
            rows.iter().map(f).collect()
        }
        let id = col(rows, |r| PgUuid(r.id));
        let store_number = col(rows, |r| r.store_number);
        let order_number = col(rows, |r| r.order_number.as_str());
        let customer_id = col(rows, |r| r.customer_id.as_deref());
        let fulfillment_type = col(rows, |r| r.fulfillment_type.as_str());
        let fulfillment_date = col(rows, |r| r.fulfillment_date.map(PgTimestamp));
        let reservation_id = col(rows, |r| r.reservation_id.map(PgUuid));
        let subtotal = col(rows, |r| PgDecimal::new(&r.subtotal));
        let discount_total = col(rows, |r| PgDecimal::new(&r.discount_total));
        let tax_total = col(rows, |r| PgDecimal::new(&r.tax_total));
        let fulfillment_cost = col(rows, |r| PgDecimal::new(&r.fulfillment_cost));
        let grand_total = col(rows, |r| PgDecimal::new(&r.grand_total));
        let payment_status = col(rows, |r| r.payment_status.as_str());
        let payment_method = col(rows, |r| r.payment_method.as_deref());
        let payment_reference = col(rows, |r| r.payment_reference.as_deref());
        let status = col(rows, |r| r.status.as_str());
        let line_items = col(rows, |r| PgJsonb(&r.line_items));
        let applied_discounts = col(rows, |r| PgJsonb(&r.applied_discounts));
        let customer_snapshot = col(rows, |r| r.customer_snapshot.as_ref().map(PgJsonb));
        let fulfillment_details = col(rows, |r| r.fulfillment_details.as_ref().map(PgJsonb));
        let created_at = col(rows, |r| PgTimestamp(r.created_at));
        let updated_at = col(rows, |r| PgTimestamp(r.updated_at));
        let created_by = col(rows, |r| r.created_by.as_deref());
        let session_id = col(rows, |r| r.session_id.map(PgUuid));
        let params: [&(dyn ToSql + Sync); 24] = [
            &id,
            &store_number,
            &order_number,
            &customer_id,
            &fulfillment_type,
            &fulfillment_date,
            &reservation_id,
            &subtotal,
            &discount_total,
            &tax_total,
            &fulfillment_cost,
            &grand_total,
            &payment_status,
            &payment_method,
            &payment_reference,
            &status,
            &line_items,
            &applied_discounts,
            &customer_snapshot,
            &fulfillment_details,
            &created_at,
            &updated_at,
            &created_by,
            &session_id,
        ];
        let inserted = self
            .client
            .query(&self.statement, &params)
            .await
            .context("unnest INSERT")?;
        Ok(inserted.len())
    }

    async fn copy(&mut self, rows: &[Row]) -> anyhow::Result<usize> {
        let tx = self.client.transaction().await.context("BEGIN")?;
        let sink = tx
            .copy_in(&format!(
                "COPY {COPY_TABLE} ({COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .context("COPY")?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &self.copy_types));
        for r in rows {
            let values: [&(dyn ToSql + Sync); 24] = [
                &PgUuid(r.id),
                &r.store_number,
                &r.order_number,
                &r.customer_id,
                &r.fulfillment_type,
                &r.fulfillment_date.map(PgTimestamp),
                &r.reservation_id.map(PgUuid),
                &PgDecimal::new(&r.subtotal),
                &PgDecimal::new(&r.discount_total),
                &PgDecimal::new(&r.tax_total),
                &PgDecimal::new(&r.fulfillment_cost),
                &PgDecimal::new(&r.grand_total),
                &r.payment_status,
                &r.payment_method,
                &r.payment_reference,
                &r.status,
                &PgJsonb(&r.line_items),
                &PgJsonb(&r.applied_discounts),
                &r.customer_snapshot.as_ref().map(PgJsonb),
                &r.fulfillment_details.as_ref().map(PgJsonb),
                &PgTimestamp(r.created_at),
                &PgTimestamp(r.updated_at),
                &r.created_by,
                &r.session_id.map(PgUuid),
            ];
            writer.as_mut().write(&values).await.context("COPY row")?;
        }
        writer.as_mut().finish().await.context("COPY end")?;
        let inserted = tx
            .query(&self.statement, &[])
            .await
            .context("INSERT ... SELECT FROM the temporary table")?
            .len();
        tx.commit().await.context("COMMIT")?;
        Ok(inserted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnest_statement_has_one_array_per_column() {
        let sql = unnest_sql();
        assert_eq!(sql.matches("[]").count(), COLUMNS.split(',').count());
        assert!(sql.contains("$24::uuid[]"));
    }

    #[test]
    fn numeric_wire_layout() {
        let mut out = BytesMut::new();
        let v: BigDecimal = "12345.67".parse().unwrap();
        PgDecimal::new(&v).to_sql(&Type::NUMERIC, &mut out).unwrap();
        // 3 digits (1, 2345, 6700), weight 1, positive, scale 2
        assert_eq!(
            &out[..],
            &[0, 3, 0, 1, 0, 0, 0, 2, 0, 1, 0x09, 0x29, 0x1a, 0x2c]
        );
    }
}

//! `order-ingest backfill`: the one-time copy of checkout's `orders` table into orderdb.
//!
//! Pages are read by id (keyset, `WHERE id > $last ORDER BY id LIMIT n`) and each page is
//! written with one idempotent `insert_if_absent`. That makes the copy resumable two ways:
//! `--after <last id printed>` skips what is done, and simply starting again is also correct
//! (rows already present are counted, not changed). Orders the store rejects (a value that
//! does not fit, an order number held by another id) are reported and make the exit status 1;
//! they do not stop the copy.

use std::time::Duration;

use order_store::orders::{insert_if_absent, page_by_id, InsertOutcome};
use order_store::{NewOrder, Order, Pool, StoreError};
use uuid::Uuid;

use crate::retry::Backoff;

const ATTEMPTS: u32 = 12;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub copied: u64,
    pub inserted: u64,
    pub already_present: u64,
    pub rejected: u64,
    pub last_id: Option<Uuid>,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "backfill: read={} inserted={} already_present={} rejected={} last_id={}",
            self.copied,
            self.inserted,
            self.already_present,
            self.rejected,
            self.last_id
                .map_or_else(|| "-".to_owned(), |id| id.to_string())
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("backfill stopped: {cause}; {progress}; resume with --after {resume}")]
pub struct BackfillError {
    pub cause: StoreError,
    pub resume: String,
    pub progress: Progress,
}

/// A stored order as the input of an insert: same fields, nothing left to defaults.
pub fn to_new_order(order: Order) -> NewOrder {
    NewOrder {
        id: order.id,
        store_number: order.store_number,
        order_number: order.order_number,
        customer_id: order.customer_id,
        fulfillment_type: order.fulfillment_type,
        fulfillment_date: order.fulfillment_date,
        reservation_id: order.reservation_id,
        subtotal: order.subtotal,
        discount_total: Some(order.discount_total),
        tax_total: Some(order.tax_total),
        fulfillment_cost: Some(order.fulfillment_cost),
        grand_total: order.grand_total,
        payment_status: Some(order.payment_status),
        payment_method: order.payment_method,
        payment_reference: order.payment_reference,
        status: Some(order.status),
        line_items: order.line_items,
        applied_discounts: order.applied_discounts,
        customer_snapshot: order.customer_snapshot,
        fulfillment_details: order.fulfillment_details,
        created_at: Some(order.created_at),
        updated_at: Some(order.updated_at),
        created_by: order.created_by,
        session_id: order.session_id,
    }
}

async fn with_retry<T, F, Fut>(
    step: &str,
    progress: &Progress,
    mut work: F,
) -> Result<T, BackfillError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Backoff::standard();
    loop {
        let result = tokio::time::timeout(Duration::from_secs(120), work())
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("{step} timed out"))));
        match result {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && backoff.attempts() + 1 < ATTEMPTS => {
                let delay = backoff.next_delay();
                tracing::warn!(step, error = %e, retry_in_ms = delay.as_millis() as u64, "backfill: transient failure; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                return Err(BackfillError {
                    cause: e,
                    resume: progress
                        .last_id
                        .map_or_else(|| "<none: start again>".to_owned(), |id| id.to_string()),
                    progress: progress.clone(),
                })
            }
        }
    }
}

/// Copies every order of `source` with an id above `after` into `target`, calling `report`
/// after each page.
pub async fn backfill(
    source: &Pool,
    target: &Pool,
    after: Option<Uuid>,
    batch_size: u32,
    mut report: impl FnMut(&Progress),
) -> Result<Progress, BackfillError> {
    let mut progress = Progress {
        last_id: after,
        ..Progress::default()
    };
    loop {
        let cursor = progress.last_id;
        let page = with_retry("read source", &progress, || async move {
            let mut conn = source.get().await?;
            page_by_id(&mut conn, cursor, i64::from(batch_size)).await
        })
        .await?;
        let Some(last) = page.last().map(|o| o.id) else {
            return Ok(progress);
        };
        let orders: Vec<NewOrder> = page.into_iter().map(to_new_order).collect();
        let outcomes = with_retry("insert", &progress, || async {
            let mut conn = target.get().await?;
            insert_if_absent(&mut conn, &orders).await
        })
        .await?;
        for (order, outcome) in orders.iter().zip(outcomes) {
            match outcome {
                InsertOutcome::Inserted => progress.inserted += 1,
                InsertOutcome::AlreadyPresent => progress.already_present += 1,
                InsertOutcome::Rejected(r) => {
                    progress.rejected += 1;
                    tracing::warn!(orderId = %order.id, orderNumber = %order.order_number, errorClass = r.kind.as_str(), error = %r.message, "backfill: order rejected");
                }
            }
        }
        progress.copied += orders.len() as u64;
        progress.last_id = Some(last);
        report(&progress);
    }
}

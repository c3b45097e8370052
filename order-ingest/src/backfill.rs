//! `order-ingest backfill`: the one-time copy of checkout's `orders` table into orderdb.
//!
//! Pages are read by id (keyset, `WHERE id > $last ORDER BY id LIMIT n`) and each page is
//! written with one idempotent `insert_if_absent`. That makes the copy resumable two ways:
//! `--after <last id printed>` skips what is done, and simply starting again is also correct
//! (rows already present are counted, not changed). Orders the store rejects (a value that
//! does not fit, an order number held by another id) are reported and make the exit status 1;
//! they do not stop the copy.

use order_store::orders::page_by_id;
use order_store::{NewOrder, Pool, StoreError};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::batch::{self, Outcome, Tally};
use crate::config::Timeouts;
use crate::retry;

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

/// Copies every order of `source` with an id above `after` into `target`, calling `report`
/// after each page.
pub async fn backfill(
    source: &Pool,
    target: &Pool,
    after: Option<Uuid>,
    batch_size: u32,
    timeouts: Timeouts,
    mut report: impl FnMut(&Progress),
) -> Result<Progress, BackfillError> {
    let mut progress = Progress {
        last_id: after,
        ..Progress::default()
    };
    let stopped = |cause: StoreError, progress: &Progress| BackfillError {
        cause,
        resume: progress
            .last_id
            .map_or_else(|| "<none: start again>".to_owned(), |id| id.to_string()),
        progress: progress.clone(),
    };
    loop {
        let cursor = progress.last_id;
        let page = retry::bounded(
            "backfill",
            "read source",
            StoreError::is_transient,
            async || read_page(source, cursor, batch_size, timeouts).await,
        )
        .await
        .map_err(|e| stopped(e, &progress))?;
        let Some(last) = page.last().map(|o| o.id) else {
            return Ok(progress);
        };
        let orders: Vec<NewOrder> = page.into_iter().map(NewOrder::from).collect();
        // One span per copied page, the insert's span under it (as for a batch of events).
        let span = tracing::debug_span!(
            "backfill",
            otel.name = "backfill orders",
            order_count = orders.len(),
        );
        let outcomes = retry::bounded("backfill", "insert", StoreError::is_transient, async || {
            batch::insert(target, &orders, timeouts.db()).await
        })
        .instrument(span)
        .await
        .map_err(|e| stopped(e, &progress))?;
        let mut tally = Tally::default();
        for (order, outcome) in orders.iter().zip(outcomes) {
            tally.count(&outcome);
            if let Outcome::Rejected(class, message) = outcome {
                tracing::warn!(orderId = %order.id, orderNumber = %order.order_number, errorClass = class.as_str(), error = %message, "backfill: order rejected");
            }
        }
        progress.inserted += tally.inserted;
        progress.already_present += tally.already_present;
        progress.rejected += tally.rejected;
        progress.copied += orders.len() as u64;
        progress.last_id = Some(last);
        report(&progress);
    }
}

/// One page of the source, bounded by the database timeout.
async fn read_page(
    source: &Pool,
    after: Option<Uuid>,
    batch_size: u32,
    timeouts: Timeouts,
) -> Result<Vec<order_store::Order>, StoreError> {
    let work = async {
        let mut conn = source.get().await?;
        page_by_id(&mut conn, after, i64::from(batch_size)).await
    };
    retry::within(timeouts.db(), "read source", work).await
}

//! Arrays of orders of any length in flat memory: read a chunk at a time with a keyset cursor
//! and sent as they come.

use order_store::orders::{self, Cursor, OrderFilter};
use order_store::Order;
use warp::http::{header, HeaderValue, StatusCode};
use warp::hyper::body::Bytes;
use warp::hyper::Body;
use warp::reply::Response;

use crate::db::Db;
use crate::error::ApiError;

/// Rows per query when streaming an array: large enough to amortise the round trip, small
/// enough that memory stays flat whatever the result size.
pub const STREAM_CHUNK: i64 = 500;

fn write_orders(buf: &mut Vec<u8>, orders: &[Order], mut first: bool) -> Result<(), ApiError> {
    for order in orders {
        if !first {
            buf.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut *buf, order).map_err(|e| ApiError::Internal(Box::new(e)))?;
    }
    Ok(())
}

/// The orders matching `filter` as one JSON array, read `STREAM_CHUNK` rows at a time with a
/// keyset cursor and sent through a bounded channel, so memory stays flat for any result
/// size. The first chunk is read before the response starts, so that an unreachable database
/// is still a 503; a failure after that aborts the body (the client sees a broken response,
/// never a well-formed but truncated array).
pub async fn orders_array(
    db: Db,
    filter: OrderFilter,
    offset: i64,
    limit: Option<i64>,
) -> Result<Response, ApiError> {
    let take = |remaining: Option<i64>| remaining.map_or(STREAM_CHUNK, |r| r.min(STREAM_CHUNK));
    let first_take = take(limit);
    let first = page(&db, &filter, None, offset, first_take).await?;
    let mut buf = Vec::with_capacity(first.len() * 1024 + 2);
    buf.push(b'[');
    write_orders(&mut buf, &first, true)?;
    let remaining = limit.map(|l| l - first.len() as i64);
    let complete = (first.len() as i64) < first_take || remaining == Some(0);
    let body = if complete {
        buf.push(b']');
        Body::from(buf)
    } else {
        let (tx, body) = Body::channel();
        let cursor = first.last().map(Cursor::from);
        tokio::spawn(continue_stream(db, filter, cursor, remaining, buf, tx));
        body
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn continue_stream(
    db: Db,
    filter: OrderFilter,
    mut cursor: Option<Cursor>,
    mut remaining: Option<i64>,
    first_chunk: Vec<u8>,
    mut tx: warp::hyper::body::Sender,
) {
    if tx.send_data(Bytes::from(first_chunk)).await.is_err() {
        return; // the client went away
    }
    // `send_data` waits until the client has taken the previous chunk: the channel is the
    // bound that keeps a slow client from buffering the whole result here.
    loop {
        let want = remaining.map_or(STREAM_CHUNK, |r| r.min(STREAM_CHUNK));
        let rows = page(&db, &filter, cursor, 0, want).await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "order stream aborted");
                tx.abort();
                return;
            }
        };
        let mut buf = Vec::with_capacity(rows.len() * 1024 + 1);
        if let Err(e) = write_orders(&mut buf, &rows, false) {
            tracing::error!(error = %e, "order stream aborted");
            tx.abort();
            return;
        }
        remaining = remaining.map(|r| r - rows.len() as i64);
        cursor = rows.last().map(Cursor::from).or(cursor);
        let done = (rows.len() as i64) < want || remaining == Some(0);
        if done {
            buf.push(b']');
        }
        if tx.send_data(Bytes::from(buf)).await.is_err() {
            return;
        }
        if done {
            return;
        }
    }
}

/// One chunk of the array: the orders matching `filter` after `cursor`, newest first.
pub(crate) async fn page(
    db: &Db,
    filter: &OrderFilter,
    cursor: Option<Cursor>,
    offset: i64,
    limit: i64,
) -> Result<Vec<Order>, ApiError> {
    db.read("SELECT", async |conn| {
        orders::list(conn, filter, cursor, offset, limit).await
    })
    .await
}

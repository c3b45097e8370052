//! Request bodies: the JSON content-type check and the size limit, for REST and GraphQL alike.

use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use warp::http::{header, HeaderMap};
use warp::hyper::body::Buf;
use warp::{Filter, Rejection};

use crate::error::ApiError;

/// A JSON request body of type `T`: `application/json` (415 otherwise), at most `limit` bytes
/// (413), well-formed (400). Read as a stream so that a body without `Content-Length` is
/// bounded too.
pub fn json_body<T: DeserializeOwned + Send + 'static>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    json_content_type()
        .and(bounded_body(limit))
        .and_then(|bytes: Vec<u8>| async move {
            serde_json::from_slice(&bytes)
                .map_err(|e| Rejection::from(ApiError::MalformedJson(e.to_string())))
        })
}

/// The whole request body, at most `limit` bytes (413 otherwise), whether its length is
/// declared (`Content-Length`) or not (`Transfer-Encoding: chunked`).
pub fn bounded_body(limit: u64) -> impl Filter<Extract = (Vec<u8>,), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and(warp::body::stream())
        .and_then(move |headers: HeaderMap, body| read_bounded(headers, body, limit))
}

/// 415 unless the body is declared JSON.
pub fn json_content_type() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(|content_type: Option<String>| async move {
            let is_json = content_type
                .as_deref()
                .and_then(|v| v.split(';').next())
                .is_some_and(|mime| {
                    let mime = mime.trim().to_ascii_lowercase();
                    mime == "application/json"
                        || (mime.starts_with("application/") && mime.ends_with("+json"))
                });
            if is_json {
                Ok(())
            } else {
                Err(Rejection::from(ApiError::UnsupportedMediaType))
            }
        })
        .untuple_one()
}

async fn read_bounded<S, B>(headers: HeaderMap, body: S, limit: u64) -> Result<Vec<u8>, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit).into());
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    let mut body = Box::pin(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::UnreadableBody(e.to_string()))?;
        if (bytes.len() + chunk.remaining()) as u64 > limit {
            return Err(ApiError::PayloadTooLarge(limit).into());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(bytes)
}

//! An HTTP/1.1 client for the tests of the servers (order-api, order-ingest's `/metrics`): one
//! request, the whole answer read within [`WAIT`], and the service's error body checked.
//!
//! A request that cannot be sent or answered, and an answer that is not what the helper
//! asserts, panic: that is how the calling test fails.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::sync::OnceLock;
use std::time::Duration;

use hyper::body::HttpBody as _;
use hyper::client::HttpConnector;
use hyper::{Body, Client, HeaderMap, Method, Request, StatusCode};
use serde_json::Value;

/// The longest a test waits for one answer.
pub const WAIT: Duration = Duration::from_secs(60);

/// A response with its body read (and parsed, when it is JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    /// Asserts the docs/compatibility.md §3 error body and returns it.
    pub fn error(&self, status: u16, path: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{}",
            self.text
        );
        let body = self.json();
        for key in ["error", "message", "path", "status", "traceId", "details"] {
            assert!(body.get(key).is_some(), "{key} missing in {body}");
        }
        assert_eq!(body["status"], status, "{body}");
        assert_eq!(body["path"], path, "{body}");
        body
    }

    /// Asserts a 400 validation error body and returns its `(field, message)` pairs, sorted.
    pub fn validation(&self, path: &str) -> Vec<(String, String)> {
        let body = self.error(400, path);
        assert_eq!(body["error"], "Bad Request");
        assert_eq!(body["message"], "Request validation failed");
        let mut errors: Vec<(String, String)> = body["details"]["validationErrors"]
            .as_array()
            .unwrap_or_else(|| panic!("no validationErrors: {body}"))
            .iter()
            .map(|e| {
                (
                    e["field"].as_str().unwrap().to_owned(),
                    e["message"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        errors.sort();
        errors
    }
}

/// One client for the process. It keeps no idle connection: every test has its own runtime
/// and its own servers, so a connection kept from an earlier test could belong to a runtime or
/// a server that is gone.
fn client() -> Client<HttpConnector> {
    static CLIENT: OnceLock<Client<HttpConnector>> = OnceLock::new();
    CLIENT
        .get_or_init(|| Client::builder().pool_max_idle_per_host(0).build_http())
        .clone()
}

/// Any request; `body` is sent as is with `content_type`, `token` as a bearer token.
pub async fn send(
    method: Method,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(body.map_or_else(Body::empty, Body::from))
        .unwrap();
    exchange(request).await
}

/// Sends `request` and reads the whole answer, within [`WAIT`].
pub async fn exchange(request: Request<Body>) -> Reply {
    let fut = async {
        let response = client().request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        Reply {
            status,
            headers,
            text: String::from_utf8(bytes).unwrap(),
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("request timed out")
}

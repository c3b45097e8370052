//! Redis over TLS (`rediss://`) with the service's one trust story: the platform roots plus
//! `SSL_CERT_FILE` ([`order_store::runtime::tls`]), for the blocking reader, the command connection and
//! every reconnect, on one server and on every node of a cluster alike (each connection is
//! opened from the client built here).

use crate::client::{RedisClient, RedisMode};

/// A Redis client for `url` in [`RedisMode::Auto`]: one server or a cluster, whichever the
/// server says it is on first use. `url` may name several comma-separated seed nodes of a
/// cluster. For `rediss://` the server certificate is verified against the platform roots plus
/// the bundle named by `SSL_CERT_FILE`, and its host name checked; a `#insecure` fragment is
/// refused (this build leaves out redis's `tls-rustls-insecure`).
pub fn redis_client(url: &str) -> redis::RedisResult<RedisClient> {
    RedisClient::new(url, RedisMode::Auto)
}

/// The trusted roots for `rediss://`, as PEM: the platform roots plus `SSL_CERT_FILE`.
pub(crate) fn roots_pem() -> redis::RedisResult<Vec<u8>> {
    order_store::runtime::tls::install_default_provider();
    order_store::runtime::tls::default_roots_pem().map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cannot load the trusted CA certificates",
            e.to_string(),
        ))
    })
}

/// A client of the one node `url` names (no cluster routing).
pub(crate) fn node_client(url: &str) -> redis::RedisResult<redis::Client> {
    if !url.starts_with("rediss://") {
        return redis::Client::open(url);
    }
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(roots_pem()?),
        },
    )
}

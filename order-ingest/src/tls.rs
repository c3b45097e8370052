//! Redis over TLS (`rediss://`, issue 10) with the service's one trust story: the platform
//! roots plus `SSL_CERT_FILE` ([`order_store::runtime::tls`]), for the blocking reader, the command
//! connection and every reconnect (each is opened from the client built here).

/// A Redis client for `url`. For `rediss://` the server certificate is verified against the
/// platform roots plus the bundle named by `SSL_CERT_FILE`, and its host name checked; a
/// `#insecure` fragment is refused (this build leaves out redis's `tls-rustls-insecure`).
pub fn redis_client(url: &str) -> redis::RedisResult<redis::Client> {
    if !url.starts_with("rediss://") {
        return redis::Client::open(url);
    }
    order_store::runtime::tls::install_default_provider();
    let roots = order_store::runtime::tls::default_roots_pem().map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cannot load the trusted CA certificates",
            e.to_string(),
        ))
    })?;
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(roots),
        },
    )
}

//! The JWKS client: the user-service's keys over http or https (certificate verified against
//! the platform roots plus `SSL_CERT_FILE`), fetched once and again only for an unknown `kid`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::{AuthConfigError, VerifyKey, JWKS_FETCH_TIMEOUT, JWKS_MAX_BYTES, JWKS_MIN_REFRESH};

#[derive(Debug, thiserror::Error)]
pub(super) enum JwksError {
    #[error("JWKS fetch timed out")]
    Timeout,
    #[error("JWKS fetch failed: {}", order_store::error::with_causes(.0))]
    Http(#[from] hyper::Error),
    #[error("JWKS endpoint answered {0}")]
    Status(warp::http::StatusCode),
    #[error("JWKS too large")]
    TooLarge,
    #[error("JWKS is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// hyper 0.14's connector for the JWKS fetch: plain TCP for `http://`, and for `https://`
/// rustls (ring) verifying the certificate chain against the platform roots plus
/// `SSL_CERT_FILE` and the host name ([`order_store::runtime::tls`]).
#[derive(Clone)]
struct JwksConnector {
    http: hyper::client::HttpConnector,
    tls: tokio_rustls::TlsConnector,
}

impl JwksConnector {
    fn new() -> Result<Self, AuthConfigError> {
        let mut http = hyper::client::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(JWKS_FETCH_TIMEOUT));
        let mut config = order_store::runtime::tls::verified_client_config()
            .map_err(|e| AuthConfigError::JwksTls(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            http,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl hyper::service::Service<hyper::Uri> for JwksConnector {
    type Response = JwksStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<JwksStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let connecting = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            if !https {
                return Ok(JwksStream::Plain(tcp));
            }
            let name = rustls::pki_types::ServerName::try_from(host)?;
            let stream = tls.connect(name, tcp).await?;
            Ok(JwksStream::Tls(Box::new(stream)))
        })
    }
}

enum JwksStream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl hyper::client::connect::Connection for JwksStream {
    fn connected(&self) -> hyper::client::connect::Connected {
        hyper::client::connect::Connected::new()
    }
}

impl tokio::io::AsyncRead for JwksStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            JwksStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            JwksStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for JwksStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            JwksStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            JwksStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            JwksStream::Plain(s) => Pin::new(s).poll_flush(cx),
            JwksStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            JwksStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            JwksStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The user-service's keys, fetched once and again only when a token names an unknown `kid`.
pub(super) struct JwksCache {
    url: hyper::Uri,
    client: hyper::Client<JwksConnector>,
    keys: tokio::sync::RwLock<Arc<HashMap<String, VerifyKey>>>,
    /// When the last fetch started; held while fetching so concurrent misses share one fetch.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl JwksCache {
    pub(super) fn new(url: &str) -> Result<Self, AuthConfigError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| AuthConfigError::JwksUrl(url.to_owned()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(AuthConfigError::JwksUrl(url.to_owned()));
        }
        Ok(Self {
            url: uri,
            client: hyper::Client::builder().build(JwksConnector::new()?),
            keys: tokio::sync::RwLock::new(Arc::new(HashMap::new())),
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    async fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Option<VerifyKey> {
        let keys = self.keys.read().await.clone();
        match kid {
            Some(kid) => keys.get(kid).filter(|k| k.algorithm == alg).cloned(),
            // Without a kid the token is only acceptable if the set leaves no choice.
            None if keys.len() == 1 => keys.values().find(|k| k.algorithm == alg).cloned(),
            None => None,
        }
    }

    pub(super) async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Option<VerifyKey> {
        if let Some(key) = self.lookup(kid, alg).await {
            return Some(key);
        }
        {
            let mut last = self.last_fetch.lock().await;
            // Another request may have refreshed while this one waited for the lock.
            if let Some(key) = self.lookup(kid, alg).await {
                return Some(key);
            }
            if last.is_some_and(|t| t.elapsed() < JWKS_MIN_REFRESH) {
                return None;
            }
            *last = Some(Instant::now());
            if let Err(e) = self.fetch_and_store().await {
                tracing::warn!(error = %e, "JWKS refresh failed");
                return None;
            }
        }
        self.lookup(kid, alg).await
    }

    pub(super) async fn refresh(&self) -> Result<(), JwksError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<(), JwksError> {
        let keys = tokio::time::timeout(JWKS_FETCH_TIMEOUT, self.fetch())
            .await
            .map_err(|_| JwksError::Timeout)??;
        tracing::info!(keys = keys.len(), "JWKS loaded");
        *self.keys.write().await = Arc::new(keys);
        Ok(())
    }

    async fn fetch(&self) -> Result<HashMap<String, VerifyKey>, JwksError> {
        use hyper::body::HttpBody;
        let response = self.client.get(self.url.clone()).await?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status()));
        }
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() > JWKS_MAX_BYTES {
                return Err(JwksError::TooLarge);
            }
        }
        let raw: RawJwks = serde_json::from_slice(&bytes)?;
        // A key this server cannot use (another type, no kid) is skipped, not fatal: the set
        // may legitimately hold keys for other consumers.
        Ok(raw
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let algorithm = jwk_algorithm(&jwk)?;
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some((
                    kid.clone(),
                    VerifyKey {
                        kid: Some(kid),
                        algorithm,
                        key,
                    },
                ))
            })
            .collect())
    }
}

/// RS256 for RSA keys and ES256 for P-256 keys, unless the key names another algorithm.
pub(super) fn jwk_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let inferred = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(inferred),
        Some(KeyAlgorithm::RS256) if inferred == Algorithm::RS256 => Some(inferred),
        Some(KeyAlgorithm::ES256) if inferred == Algorithm::ES256 => Some(inferred),
        Some(_) => None,
    }
}

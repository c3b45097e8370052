//! TLS for every connection the service opens, with one trust story: rustls with the
//! `ring` provider, trusting the platform roots (Mozilla's, compiled in) plus the CA bundle named
//! by `SSL_CERT_FILE` when it is set. PostgreSQL, Redis and the JWKS client all take their roots
//! from here.
//!
//! PostgreSQL follows libpq's URL parameters: `sslmode` (`disable`, `prefer` — the default —,
//! `require`, `verify-ca`, `verify-full`) and `sslrootcert=<file>` (that file's CAs are the only
//! ones trusted, as in libpq; `sslrootcert=system` means the roots above). As in libpq, `prefer`
//! and `require` encrypt without checking the certificate, except that `require` with an
//! `sslrootcert` verifies the chain like `verify-ca`; `verify-ca` checks the chain and
//! `verify-full` also the host name. tokio-postgres knows neither `verify-*` nor `sslrootcert`,
//! so both are taken off the URL here and applied by this module's connector.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use diesel::ConnectionResult;
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

mod postgres;
mod stream;
pub use postgres::{establish, PgConnector, RustlsStream};
pub use stream::ClientTlsStream;

/// The environment variable naming an extra CA bundle (PEM) to trust.
pub const CERT_FILE_ENV: &str = "SSL_CERT_FILE";

/// A TLS set-up that cannot work: a CA file that cannot be read or holds no certificate, an
/// unknown `sslmode`. Always a configuration error, never retried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA bundle {path} ({origin}): {message}")]
    Read {
        path: String,
        origin: &'static str,
        message: String,
    },
    #[error("the CA bundle {path} ({origin}) holds no usable PEM certificate")]
    NoCertificate { path: String, origin: &'static str },
    #[error(
        "invalid sslmode {0:?} in the database URL: expected disable, prefer, require, \
         verify-ca or verify-full"
    )]
    SslMode(String),
    #[error("sslmode=verify-full needs a host name or IP address, not {0:?}")]
    HostName(String),
}

/// The one crypto provider: `ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes `ring` the process-wide default provider, for libraries (redis) that build their
/// rustls configuration with the default. Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn read_pem_certs(path: &Path, origin: &'static str) -> Result<Vec<u8>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        origin,
        message: e.to_string(),
    })?;
    // At least one certificate, and all of them parseable: a typo'd bundle fails at start-up.
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| TlsError::Read {
            path: path.display().to_string(),
            origin,
            message: format!("not a PEM certificate bundle: {e}"),
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
            origin,
        });
    }
    Ok(pem)
}

/// The PEM text of `SSL_CERT_FILE`, when set (an empty value counts as unset).
fn cert_file_pem() -> Result<Option<Vec<u8>>, TlsError> {
    match std::env::var_os(CERT_FILE_ENV) {
        Some(path) if !path.is_empty() => {
            read_pem_certs(Path::new(&path), "SSL_CERT_FILE").map(Some)
        }
        _ => Ok(None),
    }
}

pub(crate) fn store_from(
    certs: impl IntoIterator<Item = CertificateDer<'static>>,
) -> RootCertStore {
    let mut store = RootCertStore::empty();
    // A platform root that webpki cannot use (an old, odd one) is skipped, as every client does.
    store.add_parsable_certificates(certs);
    store
}

/// The trusted roots: the platform's plus `SSL_CERT_FILE`'s.
pub fn default_roots() -> Result<RootCertStore, TlsError> {
    let mut certs: Vec<CertificateDer<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    if let Some(pem) = cert_file_pem()? {
        certs.extend(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
    }
    Ok(store_from(certs))
}

/// The trusted roots as one PEM bundle, for clients that take roots only as PEM (redis's
/// `TlsCertificates::root_cert`, which replaces its built-in roots).
pub fn default_roots_pem() -> Result<Vec<u8>, TlsError> {
    use base64::Engine as _;
    let mut pem = Vec::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in text.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    if let Some(extra) = cert_file_pem()? {
        pem.extend_from_slice(&extra);
        pem.push(b'\n');
    }
    Ok(pem)
}

/// A client configuration that verifies the server against [`default_roots`] (chain and host
/// name), for HTTPS.
pub fn verified_client_config() -> Result<ClientConfig, TlsError> {
    let roots = Arc::new(default_roots()?);
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
        .with_root_certificates(roots)
        .with_no_client_auth())
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// libpq's `sslmode`, without `allow` (plain first, TLS on refusal), which no one should want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, TlsError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(TlsError::SslMode(other.to_owned())),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS parameters of a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTlsParams {
    pub mode: SslMode,
    /// `sslrootcert`: the only CAs trusted; `None` (or `system`) means [`default_roots`].
    pub root_cert: Option<PathBuf>,
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Takes `sslmode` and `sslrootcert` off a `postgres://` URL (tokio-postgres refuses
/// `verify-ca`, `verify-full` and `sslrootcert`), returning the rest and the parameters.
pub fn split_pg_url(url: &str) -> Result<(String, PgTlsParams), TlsError> {
    let mut params = PgTlsParams {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), params));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => params.mode = SslMode::parse(&percent_decode(value))?,
            "sslrootcert" => {
                let value = percent_decode(value);
                params.root_cert = (value != "system" && !value.is_empty()).then(|| value.into());
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_are_taken_off_the_url() {
        let (rest, params) = split_pg_url(
            "postgres://u:p@db:5432/orderdb?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/orderdb?application_name=x");
        assert_eq!(params.mode, SslMode::VerifyFull);
        assert_eq!(params.root_cert, Some(PathBuf::from("/tmp/ca.pem")));

        let (rest, params) = split_pg_url("postgres://db/orderdb").unwrap();
        assert_eq!(rest, "postgres://db/orderdb");
        assert_eq!(params.mode, SslMode::Prefer);

        let (rest, params) =
            split_pg_url("postgres://db/orderdb?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!(rest, "postgres://db/orderdb");
        assert_eq!(params.mode, SslMode::Require);
        assert_eq!(params.root_cert, None);

        assert!(matches!(
            split_pg_url("postgres://db/x?sslmode=allow"),
            Err(TlsError::SslMode(_))
        ));
    }

    #[test]
    fn roots_include_the_platform() {
        assert!(default_roots().unwrap().len() > 50);
        assert!(default_roots_pem()
            .unwrap()
            .starts_with(b"-----BEGIN CERTIFICATE-----\n"));
    }

    #[test]
    fn a_missing_root_file_is_a_clear_error() {
        let error = PgConnector::new(&PgTlsParams {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/ca.pem".into()),
        })
        .unwrap_err();
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }
}

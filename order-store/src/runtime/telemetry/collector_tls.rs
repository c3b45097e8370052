//! OTLP to an `https://` collector: rustls with `ring`, trusting what every other connection of
//! the service trusts (the platform roots plus `SSL_CERT_FILE`), or only the CAs of
//! `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` / `OTEL_EXPORTER_OTLP_CERTIFICATE` when one is set
//! (as the OpenTelemetry Java agent does with them, and as `sslrootcert` does for PostgreSQL).
//!
//! Both exporters get the same connector: tonic's `Channel` for `grpc` (ALPN `h2`) and
//! opentelemetry-http's hyper client for `http/protobuf` (ALPN `http/1.1`).
//!
//! A collector whose certificate is not trusted is a deployment mistake that no retry fixes,
//! so it is said once, as one warning line, and no span is sent to it: [`CheckedExporter`]
//! drops the batches without trying, and checks the certificate again once a minute, so that a
//! corrected certificate (or CA) resumes the export without a restart. A collector that is
//! down or unreachable is not this case: those exports are tried and fail as they do over
//! plain http.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::runtime::tls;

/// How often a collector whose certificate was refused is checked again.
const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// The CA file the collector's certificate must chain to, when one is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorCertificate {
    /// The variable that named it, for messages.
    pub variable: &'static str,
    pub path: PathBuf,
}

/// Remembers why the last handshake refused the collector's certificate, so that a failed
/// export can be told apart from a collector that is merely down.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    rejection: Mutex<Option<String>>,
}

impl RecordingVerifier {
    fn take_rejection(&self) -> Option<String> {
        self.rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        *self
            .rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            verdict.as_ref().err().map(ToString::to_string);
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The TLS side of export to one `https://` collector: the client configuration both the
/// exporter's connections and the certificate check use.
#[derive(Debug)]
pub struct CollectorTls {
    endpoint: String,
    host: String,
    port: u16,
    config: Arc<ClientConfig>,
    verifier: Arc<RecordingVerifier>,
    state: Mutex<Trust>,
}

#[derive(Debug, Clone, Copy)]
enum Trust {
    /// Not known yet, or the collector could not be reached to tell.
    Unchecked,
    Trusted,
    /// Refused (and said so); checked again from `recheck_at`.
    Refused {
        recheck_at: Instant,
    },
}

impl CollectorTls {
    /// Reads the trusted CAs and builds the client configuration for `endpoint`
    /// (`https://host[:port][/path]`), offering `alpn` (`h2` for gRPC, `http/1.1` for HTTP).
    /// The `Err` is one line for start-up.
    pub fn new(
        endpoint: &str,
        certificate: Option<&CollectorCertificate>,
        alpn: &[u8],
    ) -> Result<Arc<Self>, String> {
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("OTLP endpoint {endpoint:?} is not a URL: {e}"))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("OTLP endpoint {endpoint:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let roots = match certificate {
            Some(file) => {
                let pem =
                    tls::read_pem_certs(&file.path, file.variable).map_err(|e| e.to_string())?;
                tls::store_from(
                    CertificateDer::pem_slice_iter(&pem)
                        .filter_map(Result::ok)
                        .map(CertificateDer::into_owned),
                )
            }
            None => tls::default_roots().map_err(|e| e.to_string())?,
        };
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls::provider())
            .build()
            .map_err(|e| format!("cannot trust the OTLP collector's CAs: {e}"))?;
        let verifier = Arc::new(RecordingVerifier {
            inner,
            rejection: Mutex::new(None),
        });
        let mut config = ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(Self {
            endpoint: endpoint.to_owned(),
            port: uri.port_u16().unwrap_or(443),
            host,
            config: Arc::new(config),
            verifier,
            state: Mutex::new(Trust::Unchecked),
        }))
    }

    /// The connector the exporter's client connects with.
    pub fn connector(&self) -> CollectorConnector {
        CollectorConnector {
            config: self.config.clone(),
        }
    }

    fn set(&self, trust: Trust) -> Trust {
        std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            trust,
        )
    }

    /// Records a refused certificate; the warning is written on the first refusal only.
    fn refused(&self, reason: &str) {
        let before = self.set(Trust::Refused {
            recheck_at: Instant::now() + RECHECK_EVERY,
        });
        if !matches!(before, Trust::Refused { .. }) {
            tracing::warn!(
                endpoint = %self.endpoint,
                reason,
                "no traces are exported: the OTLP collector's TLS certificate is not trusted \
                 (trust its CA with OTEL_EXPORTER_OTLP_CERTIFICATE or SSL_CERT_FILE); \
                 checked again every minute"
            );
        }
    }

    /// One TLS handshake with the collector, bounded by five seconds: `Some(reason)` when it
    /// refused the certificate, `None` when it was accepted or the collector could not be
    /// reached (the export then fails or succeeds on its own).
    pub(super) async fn check(&self) -> Option<String> {
        self.verifier.take_rejection();
        let handshake = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
            connect_tls(&self.config, &self.host, tcp).await
        };
        match tokio::time::timeout(Duration::from_secs(5), handshake).await {
            Ok(Ok(_)) => {
                if matches!(self.set(Trust::Trusted), Trust::Refused { .. }) {
                    tracing::info!(endpoint = %self.endpoint, "the OTLP collector's TLS certificate is trusted now; exporting traces");
                }
                None
            }
            Ok(Err(_)) => self.verifier.take_rejection(),
            Err(_) => None,
        }
    }

    /// Whether a batch should be sent now (checking the certificate first when it is not
    /// known to be trusted).
    pub(super) async fn ready(&self) -> bool {
        let state = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state {
            Trust::Trusted => true,
            Trust::Refused { recheck_at } if Instant::now() < recheck_at => false,
            Trust::Unchecked | Trust::Refused { .. } => match self.check().await {
                Some(reason) => {
                    self.refused(&reason);
                    false
                }
                None => true,
            },
        }
    }

    /// Checks the certificate once at start-up, so that a refused one is said without waiting
    /// for the first span.
    pub fn check_in_background(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Some(reason) = this.check().await {
                this.refused(&reason);
            }
        });
    }
}

async fn connect_tls(
    config: &Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    TlsConnector::from(config.clone()).connect(name, tcp).await
}

/// The span exporter, with export to a collector whose certificate is refused turned off
/// (see the module's documentation). Over plain http it is the exporter itself.
#[derive(Debug)]
pub struct CheckedExporter {
    pub(super) inner: opentelemetry_otlp::SpanExporter,
    pub(super) tls: Option<Arc<CollectorTls>>,
}

impl SpanExporter for CheckedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let Some(tls) = &self.tls else {
            return self.inner.export(batch).await;
        };
        if !tls.ready().await {
            return Ok(());
        }
        tls.verifier.take_rejection();
        let result = self.inner.export(batch).await;
        if result.is_err() {
            // The collector's certificate changed under a running export: said once, as above.
            if let Some(reason) = tls.verifier.take_rejection() {
                tls.refused(&reason);
                return Ok(());
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Opens TCP, then TLS, to the host and port of the URI it is asked for.
#[derive(Debug, Clone)]
pub struct CollectorConnector {
    config: Arc<ClientConfig>,
}

impl tower_service::Service<http::Uri> for CollectorConnector {
    type Response = TokioIo<CollectorStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let tcp = TcpStream::connect((host.as_str(), uri.port_u16().unwrap_or(443))).await?;
            tcp.set_nodelay(true)?;
            let tls = connect_tls(&config, &host, tcp).await?;
            Ok(TokioIo::new(tls::ClientTlsStream(tls)))
        })
    }
}

/// A TLS connection to the collector.
pub type CollectorStream = tls::ClientTlsStream<TcpStream>;

impl Connection for tls::ClientTlsStream<TcpStream> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

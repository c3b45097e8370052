//! The PostgreSQL side: a tokio-postgres TLS connector on rustls that applies `sslmode`, and
//! the connection establishment diesel-async's pool calls.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Connects to PostgreSQL as the URL's TLS parameters say. Built once per pool: the CA files
/// are read here, so a bad one is an error before any connection is tried.
#[derive(Clone)]
pub struct PgConnector {
    mode: SslMode,
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PgConnector {
    pub fn new(params: &PgTlsParams) -> Result<Self, TlsError> {
        if params.mode == SslMode::Disable {
            return Ok(Self {
                mode: params.mode,
                config: None,
            });
        }
        let explicit_roots = params
            .root_cert
            .as_deref()
            .map(|path| read_pem_certs(path, "sslrootcert"))
            .transpose()?;
        // libpq: `require` with a root certificate file behaves like `verify-ca`.
        let mode = match (params.mode, &explicit_roots) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(LibpqVerifier {
                roots: None,
                provider: provider(),
            }),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = match &explicit_roots {
                    Some(pem) => store_from(
                        CertificateDer::pem_slice_iter(pem)
                            .filter_map(Result::ok)
                            .map(CertificateDer::into_owned),
                    ),
                    None => default_roots()?,
                };
                let roots = Arc::new(roots);
                if mode == SslMode::VerifyFull {
                    WebPkiServerVerifier::builder_with_provider(roots, provider())
                        .build()
                        .map_err(|e| TlsError::Read {
                            path: params.root_cert.as_deref().map_or_else(
                                || "the default roots".into(),
                                |p| p.display().to_string(),
                            ),
                            origin: "sslrootcert",
                            message: e.to_string(),
                        })?
                } else {
                    Arc::new(LibpqVerifier {
                        roots: Some(roots),
                        provider: provider(),
                    })
                }
            }
        };
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            mode,
            config: Some(Arc::new(config)),
        })
    }

    /// Connects with `url` (TLS parameters already taken off) and hands the connection to
    /// diesel-async.
    pub async fn establish(&self, url: &str) -> ConnectionResult<AsyncPgConnection> {
        let bad = |e: &tokio_postgres::Error| {
            diesel::ConnectionError::BadConnection(crate::error::with_causes(e))
        };
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| bad(&e))?;
        config.ssl_mode(match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let tls = MakeRustls {
            mode: self.mode,
            config: self.config.clone(),
        };
        let (client, connection) = config.connect(tls).await.map_err(|e| bad(&e))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }
}

/// Connects one connection to the URL, honouring its `sslmode` and `sslrootcert`.
pub async fn establish(url: &str) -> ConnectionResult<AsyncPgConnection> {
    let (url, params) = split_pg_url(url)
        .map_err(|e| diesel::ConnectionError::InvalidConnectionUrl(e.to_string()))?;
    let connector = PgConnector::new(&params)
        .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
    connector.establish(&url).await
}

/// libpq's checks short of `verify-full`: with no `roots` (`prefer`, `require`) the
/// connection is encrypted but the certificate not checked; with `roots` (`verify-ca`) the chain
/// must lead to one of them, the host name unchecked. Handshake signatures are verified always.
#[derive(Debug)]
struct LibpqVerifier {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// tokio-postgres's TLS hook over tokio-rustls.
#[derive(Clone)]
struct MakeRustls {
    mode: SslMode,
    config: Option<Arc<ClientConfig>>,
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, TlsError> {
        let name = match ServerName::try_from(host.to_owned()) {
            Ok(name) => name,
            Err(_) if self.mode != SslMode::VerifyFull => {
                // Only sent as SNI: any well-formed name does when the name is not checked.
                ServerName::try_from("postgres").unwrap_or_else(|_| unreachable!())
            }
            Err(_) => return Err(TlsError::HostName(host.to_owned())),
        };
        Ok(RustlsConnect {
            mode: self.mode,
            config: self.config.clone(),
            name,
        })
    }
}

struct RustlsConnect {
    mode: SslMode,
    config: Option<Arc<ClientConfig>>,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let Some(config) = self.config else {
                return Err(io::Error::other("TLS is disabled (sslmode=disable)"));
            };
            tokio_rustls::TlsConnector::from(config)
                .connect(self.name, stream)
                .await
                .map(ClientTlsStream)
                // The mode in the message says which check refused the server.
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("sslmode={}: {e}", self.mode.as_str()))
                })
        })
    }
}

/// The TLS stream tokio-postgres reads and writes.
pub type RustlsStream = ClientTlsStream<Socket>;

impl TlsStream for ClientTlsStream<Socket> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding (what libpq does with channel_binding=prefer when the
        // binding data is not offered); the TLS session itself is verified as the mode says.
        ChannelBinding::none()
    }
}

//! A test OTLP trace collector: the real protocols, both of them, on a spare port, keeping every
//! span it receives for the test to look at. gRPC is served with tonic and the
//! `opentelemetry-proto` service; `http/protobuf` is `POST /v1/traces` with the same messages
//! in protobuf, as OpenTelemetry collectors answer them. [`Collector::start_tls`] puts a TLS
//! front (rustls, a certificate for `localhost` from a test CA) before either, as managed
//! collectors are reached.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use tokio::sync::oneshot;
use warp::Filter;

pub use order_store::runtime::telemetry::OtlpProtocol;

/// One received span, with ids as lowercase hex and attribute values as text.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service_name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 2 server, 3 client, 5 consumer.
    pub kind: i32,
    pub attributes: HashMap<String, String>,
    /// The attributes whose OTLP value is an integer (`IntValue`), with that value: the
    /// semantic conventions type some attributes, and queries compare them as numbers.
    pub int_attributes: HashMap<String, i64>,
    /// `(trace_id, span_id)` of each link.
    pub links: Vec<(String, String)>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// The attribute's value if it was sent as an integer; `None` if absent or of another type.
    pub fn int_attribute(&self, key: &str) -> Option<i64> {
        self.int_attributes.get(key).copied()
    }
}

type Received = Arc<Mutex<Vec<ReceivedSpan>>>;

pub struct Collector {
    addr: SocketAddr,
    protocol: OtlpProtocol,
    received: Received,
    requests: Arc<Mutex<u64>>,
    headers: Headers,
    stop: Option<oneshot::Sender<()>>,
    /// The TLS front's port and accept loop, in TLS mode.
    tls: Option<(u16, tokio::task::AbortHandle)>,
}

/// The request headers (gRPC metadata) of the last export request.
type Headers = Arc<Mutex<HashMap<String, String>>>;

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn keep(received: &Received, request: ExportTraceServiceRequest) {
    let mut spans = received.lock().unwrap_or_else(PoisonError::into_inner);
    for resource_spans in request.resource_spans {
        let service_name = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(text)
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ReceivedSpan {
                    service_name: service_name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv)))
                        .collect(),
                    int_attributes: span
                        .attributes
                        .iter()
                        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            Value::IntValue(i) => Some((kv.key.clone(), *i)),
                            _ => None,
                        })
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    status_code: span.status.map_or(0, |s| s.code),
                });
            }
        }
    }
}

struct Grpc {
    received: Received,
    requests: Arc<Mutex<u64>>,
    headers: Headers,
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        *self.requests.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        *self.headers.lock().unwrap_or_else(PoisonError::into_inner) = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        keep(&self.received, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Listens on a spare loopback port until dropped.
    pub async fn start(protocol: OtlpProtocol) -> Collector {
        let received = Received::default();
        let requests = Arc::new(Mutex::new(0));
        let headers = Headers::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a spare port for the test collector");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        match protocol {
            OtlpProtocol::Grpc => {
                let service = TraceServiceServer::new(Grpc {
                    received: received.clone(),
                    requests: requests.clone(),
                    headers: headers.clone(),
                });
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                tokio::spawn(async move {
                    let _ = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            }
            OtlpProtocol::HttpProtobuf => {
                let (kept, counted, seen) = (received.clone(), requests.clone(), headers.clone());
                let route = warp::path!("v1" / "traces")
                    .and(warp::post())
                    .and(warp::header::headers_cloned())
                    .and(warp::body::bytes())
                    .map(
                        move |request_headers: warp::http::HeaderMap,
                              body: warp::hyper::body::Bytes| {
                            *counted.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                            *seen.lock().unwrap_or_else(PoisonError::into_inner) = request_headers
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect();
                            match ExportTraceServiceRequest::decode(body) {
                                Ok(request) => {
                                    keep(&kept, request);
                                    let reply = ExportTraceServiceResponse {
                                        partial_success: None,
                                    }
                                    .encode_to_vec();
                                    warp::http::Response::builder()
                                        .header("content-type", "application/x-protobuf")
                                        .body(reply)
                                        .unwrap_or_default()
                                }
                                Err(_) => warp::http::Response::builder()
                                    .status(400)
                                    .body(Vec::new())
                                    .unwrap_or_default(),
                            }
                        },
                    );
                let listener = tokio_stream_of(listener);
                tokio::spawn(warp::serve(route).serve_incoming_with_graceful_shutdown(
                    listener,
                    async {
                        let _ = stopped.await;
                    },
                ));
            }
        }
        Collector {
            addr,
            protocol,
            received,
            requests,
            headers,
            stop: Some(stop),
            tls: None,
        }
    }

    /// The collector behind a TLS front that presents `pki`'s server certificate (for
    /// `localhost`, signed by `pki.ca()`) and offers ALPN `h2` and `http/1.1`.
    pub async fn start_tls(protocol: OtlpProtocol, pki: &crate::tls::Pki) -> Collector {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut collector = Collector::start(protocol).await;
        let chain = CertificateDer::pem_file_iter(pki.server_cert())
            .expect("read the test server certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("a PEM certificate");
        let key = PrivateKeyDer::from_pem_file(pki.server_key()).expect("a PEM private key");
        let mut config =
            rustls::ServerConfig::builder_with_provider(order_store::runtime::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("the test certificate and key match");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a spare port for the TLS front");
        let port = listener.local_addr().expect("a bound listener").port();
        let backend = collector.addr;
        let front = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A handshake the client abandons (an untrusted certificate) ends here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        collector.tls = Some((port, front.abort_handle()));
        collector
    }

    /// The `OTEL_EXPORTER_OTLP_ENDPOINT` of this collector: `https://localhost:<port>` in TLS
    /// mode (the certificate's name), else `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        match &self.tls {
            Some((port, _)) => format!("https://localhost:{port}"),
            None => format!("http://{}", self.addr),
        }
    }

    /// The headers (gRPC metadata) of the last export request, names in lowercase.
    pub fn last_headers(&self) -> HashMap<String, String> {
        self.headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The environment that points a binary at this collector, exporting every 100 ms.
    pub fn env(&self, service_name: &str) -> Vec<(String, String)> {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint()),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                self.protocol.as_str().to_owned(),
            ),
            ("OTEL_SERVICE_NAME", service_name.to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Export requests received so far (each carries one or more spans).
    pub fn requests(&self) -> u64 {
        *self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The spans received once `done` holds of them, or what was received after `timeout`
    /// (the test's assertions then say what is missing).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some((_, front)) = self.tls.take() {
            front.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A tokio listener as the stream of connections warp serves.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

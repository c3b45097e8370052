//! Logs and OpenTelemetry traces of both binaries, set up once at start-up.
//!
//! Traces are configured only by the standard OpenTelemetry variables, the ones the existing
//! order-service's Java agent reads, so a deployment keeps its environment:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (no endpoint: no
//! export, and no tracing layer at all, so it costs nothing), `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`grpc` or `http/protobuf`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` (the trace-specific `OTEL_EXPORTER_OTLP_TRACES_*` forms of
//! these win), `OTEL_TRACES_EXPORTER`
//! (`otlp` or `none`), `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` / `_ARG`, `OTEL_PROPAGATORS` and the batch processor's `OTEL_BSP_*`.
//!
//! Export is batched on the runtime and never waits on the collector: a full queue drops spans,
//! and a collector that is down costs a warning per failed export, never a request or an order.
//! An `https://` collector is verified like every other TLS peer of the service
//! ([`collector_tls`]); one whose certificate is not trusted is one warning line and no export.
//!
//! `RUST_LOG` filters the log lines only; the spans exported are this service's own (the
//! `order_*` crates) at `debug` and above, whatever the log level, so that turning logs down
//! does not turn traces off, and so that the exporter's own HTTP/2 client never traces itself.

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::resource::{EnvResourceDetector, ResourceDetector};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::runtime::process::LogFormat;

pub mod collector_tls;
mod context;
mod json_logs;
mod log_writer;

pub use context::{current_trace_id, current_traceparent, db_span, remote_span_context};

use collector_tls::{CheckedExporter, CollectorCertificate, CollectorTls};
use json_logs::JsonWithTraceIds;
use log_writer::LogWriter;

/// The OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// What the environment asks of trace export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceExport {
    /// No export; the reason, for the start-up log line.
    Off(&'static str),
    Otlp {
        protocol: OtlpProtocol,
        endpoint: String,
        propagators: Vec<&'static str>,
        /// How long one export may take (`OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s).
        timeout: Duration,
        /// The CAs an `https://` collector must chain to, when not the default roots.
        certificate: Option<CollectorCertificate>,
    },
}

/// The value of the trace-specific form of `OTEL_EXPORTER_OTLP_<suffix>`, else of the general
/// one, with the name of the variable it came from.
fn signal_or_general(
    get: &impl Fn(&str) -> Option<String>,
    traces: &'static str,
    general: &'static str,
) -> Option<(&'static str, String)> {
    get(traces)
        .map(|v| (traces, v))
        .or_else(|| get(general).map(|v| (general, v)))
}

/// Reads the trace settings from `var` (the environment, or a map in tests). A value that is
/// set but not understood is a configuration error, like a bad flag: silently not tracing is
/// what this issue exists to prevent.
pub fn trace_export(var: impl Fn(&str) -> Option<String>) -> Result<TraceExport, String> {
    let get = |name: &str| {
        var(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(TraceExport::Off("OTEL_SDK_DISABLED=true"));
    }
    match get("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(TraceExport::Off("OTEL_TRACES_EXPORTER=none")),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER {other:?} is not supported: use otlp or none"
            ))
        }
    }
    let Some(endpoint) =
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Ok(TraceExport::Off("no OTEL_EXPORTER_OTLP_ENDPOINT"));
    };
    // Refused here, as one line at start-up, rather than as an export error every 5 s.
    let scheme = endpoint
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("http" | "https")) {
        return Err(format!(
            "OTLP endpoint {endpoint:?} is not supported: use the collector's http:// or \
             https:// URL"
        ));
    }
    for unsupported in [
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    ] {
        if get(unsupported).is_some() {
            return Err(format!(
                "{unsupported} is not supported: the OTLP exporter presents no client \
                 certificate (send credentials in OTEL_EXPORTER_OTLP_HEADERS)"
            ));
        }
    }
    let certificate = signal_or_general(
        &get,
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    )
    .map(|(variable, path)| CollectorCertificate {
        variable,
        path: path.into(),
    });
    let timeout = match signal_or_general(
        &get,
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ) {
        None => Duration::from_secs(10),
        Some((variable, value)) => match value.parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                return Err(format!(
                    "{variable} {value:?} is not supported: use a number of milliseconds"
                ))
            }
        },
    };
    let protocol_var = if get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_some() {
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    } else {
        "OTEL_EXPORTER_OTLP_PROTOCOL"
    };
    // The specification's default is http/protobuf.
    let protocol = match get(protocol_var).as_deref() {
        None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
        Some("grpc") => OtlpProtocol::Grpc,
        Some(other) => {
            return Err(format!(
                "{protocol_var} {other:?} is not supported: use grpc or http/protobuf"
            ))
        }
    };
    let mut propagators = Vec::new();
    for name in get("OTEL_PROPAGATORS")
        .as_deref()
        .unwrap_or("tracecontext,baggage")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        match name {
            "tracecontext" => propagators.push("tracecontext"),
            "baggage" => propagators.push("baggage"),
            "none" => {}
            other => {
                return Err(format!(
                    "OTEL_PROPAGATORS {other:?} is not supported: use tracecontext, baggage or none"
                ))
            }
        }
    }
    propagators.dedup();
    Ok(TraceExport::Otlp {
        protocol,
        endpoint,
        propagators,
        timeout,
        certificate,
    })
}

/// The running trace pipeline; [`Telemetry::shutdown`] flushes it.
#[must_use = "call shutdown() before exiting, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// How long shutdown waits for the last export: a collector that is down must not hold the
/// process past its termination grace period.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

impl Telemetry {
    /// Exports what is still queued and stops the exporter, waiting at most three seconds;
    /// then writes out the buffered log lines.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            Self::flush_traces(provider).await;
        }
        flush_logs();
    }

    async fn flush_traces(provider: SdkTracerProvider) {
        // The provider's shutdown blocks until the export task on the runtime answers.
        let flush = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(FLUSH_TIMEOUT, flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "trace export did not flush"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trace export did not flush"),
            Err(_) => tracing::warn!("trace export did not flush within 3 s; last spans dropped"),
        }
    }
}

/// Writes out the log lines still buffered: for a process about to exit without
/// [`Telemetry::shutdown`].
pub fn flush_logs() {
    LogWriter::flush_process();
}

/// Sets up logs (stderr, `format`, `RUST_LOG` or `default_filter`) and, when the environment
/// asks for it, trace export as `default_service_name` (`OTEL_SERVICE_NAME` overrides it).
/// Must run inside the tokio runtime (the exporters' clients live on it). The `Err` is one line
/// to print before exiting with a usage error.
pub fn init(
    format: LogFormat,
    default_filter: &str,
    default_service_name: &str,
) -> Result<Telemetry, String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| format!("invalid RUST_LOG {directives:?}: {e}"))?,
        _ => EnvFilter::try_new(default_filter)
            .map_err(|e| format!("invalid default log filter {default_filter:?}: {e}"))?,
    };
    let export = trace_export(|name| std::env::var(name).ok())?;
    let (provider, collector_tls) = match &export {
        TraceExport::Off(_) => (None, None),
        TraceExport::Otlp {
            protocol,
            endpoint,
            propagators,
            timeout,
            certificate,
        } => {
            let collector_tls = if endpoint.to_ascii_lowercase().starts_with("https://") {
                let alpn: &[u8] = match protocol {
                    OtlpProtocol::Grpc => b"h2",
                    OtlpProtocol::HttpProtobuf => b"http/1.1",
                };
                Some(CollectorTls::new(endpoint, certificate.as_ref(), alpn)?)
            } else {
                None
            };
            let exporter = span_exporter(*protocol, endpoint, *timeout, collector_tls.clone())?;
            let provider = tracer_provider(exporter, propagators, default_service_name);
            (Some(provider), collector_tls)
        }
    };
    let writer =
        LogWriter::get().map_err(|e| format!("cannot start the log writer thread: {e}"))?;
    let logs = match format {
        // Colours only for a terminal: escape codes in a log file or a collector are noise,
        // and painting every field cost the per-order line a third of its formatting time.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .fmt_fields(JsonFields::new())
            .event_format(JsonWithTraceIds(
                tracing_subscriber::fmt::format().json().flatten_event(true),
            ))
            .with_filter(filter)
            .boxed(),
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("order-service"))
            .with_error_records_to_exceptions(true)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                // Spans down to `debug` (the database, batch and dead-letter spans are
                // `debug` so that logs at `info` neither show nor pay for them); of the log
                // events, only warnings and errors become span events.
                let level = if meta.is_span() {
                    tracing::Level::DEBUG
                } else {
                    tracing::Level::WARN
                };
                meta.target().starts_with("order_") && *meta.level() <= level
            }))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    match export {
        TraceExport::Off(reason) => tracing::debug!(reason, "trace export off"),
        TraceExport::Otlp {
            protocol, endpoint, ..
        } => tracing::info!(protocol = protocol.as_str(), %endpoint, "exporting traces over OTLP"),
    }
    if let Some(collector_tls) = collector_tls {
        collector_tls.check_in_background();
    }
    Ok(Telemetry { provider })
}

/// The OTLP exporter for `protocol`. The exporter reads the endpoint, headers, timeout and
/// compression variables itself; for an `https://` endpoint it is handed a client that
/// connects through `tls`.
fn span_exporter(
    protocol: OtlpProtocol,
    endpoint: &str,
    timeout: Duration,
    tls: Option<std::sync::Arc<CollectorTls>>,
) -> Result<CheckedExporter, String> {
    use opentelemetry_otlp::WithTonicConfig as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match (protocol, &tls) {
        (OtlpProtocol::Grpc, None) => builder.with_tonic().with_protocol(Protocol::Grpc).build(),
        (OtlpProtocol::Grpc, Some(tls)) => {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
                .map_err(|e| format!("OTLP endpoint {endpoint:?} is not a URL: {e}"))?
                .timeout(timeout)
                .connect_with_connector_lazy(tls.connector());
            builder
                .with_tonic()
                .with_protocol(Protocol::Grpc)
                .with_channel(channel)
                .build()
        }
        (OtlpProtocol::HttpProtobuf, None) => builder
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build(),
        (OtlpProtocol::HttpProtobuf, Some(tls)) => builder
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(opentelemetry_http::hyper::HyperClient::new(
                tls.connector(),
                timeout,
                None,
            ))
            .build(),
    }
    .map_err(|e| format!("cannot set up OTLP trace export: {e}"))?;
    Ok(CheckedExporter {
        inner: exporter,
        tls,
    })
}

fn tracer_provider(
    exporter: CheckedExporter,
    propagators: &[&str],
    default_service_name: &str,
) -> SdkTracerProvider {
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || EnvResourceDetector::new()
            .detect()
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .is_some();
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if !named {
        resource = resource.with_service_name(default_service_name.to_owned());
    }
    let mut composite: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    for name in propagators {
        match *name {
            "tracecontext" => composite.push(Box::new(TraceContextPropagator::new())),
            "baggage" => composite.push(Box::new(BaggagePropagator::new())),
            _ => {}
        }
    }
    // OpenTelemetry's one process-wide propagator: what every OTel library reads, set once here.
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(composite));
    // The sampler comes from OTEL_TRACES_SAMPLER / _ARG (the SDK's default config reads them).
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build()
}

#[cfg(test)]
mod tests;

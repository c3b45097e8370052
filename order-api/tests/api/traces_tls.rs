//! Traces to an `https://` collector (both protocols, the test's own CA): trusted through
//! `SSL_CERT_FILE` or `OTEL_EXPORTER_OTLP_CERTIFICATE`, with the API key of
//! `OTEL_EXPORTER_OTLP_HEADERS` on every export; untrusted, one warning line, no export and
//! no cost to the requests.

use std::time::{Duration, Instant};

use order_test_support::db::TestDatabase;
use order_test_support::otlp::{Collector, OtlpProtocol};
use order_test_support::tls::Pki;

use crate::common::WAIT;
use crate::traces::{find, stored_order, traceparent, Api, CALLER_SPAN, CALLER_TRACE};

/// A traced read's spans reach an https collector of `protocol` whose CA is named by the
/// variable `trust`.
async fn spans_reach_an_https_collector(protocol: OtlpProtocol, trust: &str, name: &str) {
    let pki = Pki::new();
    let collector = Collector::start_tls(protocol, &pki).await;
    assert!(collector.endpoint().starts_with("https://localhost:"));
    let db = TestDatabase::new().await;
    let id = stored_order(&db).await;
    let mut env = collector.env("order-api-test");
    env.push((trust.to_owned(), pki.ca().display().to_string()));
    env.push((
        "OTEL_EXPORTER_OTLP_HEADERS".to_owned(),
        "x-api-key=test-key-1".to_owned(),
    ));
    let api = Api::start(&db, name, &env).await;
    let parent = traceparent();
    let reply = api
        .get(&format!("/orders/{id}"), Some(parent.as_str()))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let spans = collector
        .wait_for(WAIT, |spans| find(spans, "SELECT orders").is_some())
        .await;
    let server = find(&spans, "GET /orders/{orderId}").unwrap_or_else(|| {
        panic!(
            "no span over TLS: {spans:#?}\n{}",
            std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.log"))
            )
            .unwrap_or_default()
        )
    });
    assert_eq!(server.trace_id, CALLER_TRACE);
    assert_eq!(server.parent_span_id, CALLER_SPAN);
    let select = find(&spans, "SELECT orders").unwrap();
    assert_eq!(select.parent_span_id, server.span_id);
    assert_eq!(
        collector
            .last_headers()
            .get("x-api-key")
            .map(String::as_str),
        Some("test-key-1"),
        "{:?}",
        collector.last_headers()
    );
    let logs = api.stop().await;
    assert!(!logs.contains("not trusted"), "{logs}");
}

#[tokio::test]
async fn spans_reach_an_https_grpc_collector_trusted_through_ssl_cert_file() {
    spans_reach_an_https_collector(OtlpProtocol::Grpc, "SSL_CERT_FILE", "traces-tls-grpc-ssl")
        .await;
}

#[tokio::test]
async fn spans_reach_an_https_grpc_collector_trusted_through_otel_certificate() {
    spans_reach_an_https_collector(
        OtlpProtocol::Grpc,
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "traces-tls-grpc-otel",
    )
    .await;
}

#[tokio::test]
async fn spans_reach_an_https_http_protobuf_collector_trusted_through_ssl_cert_file() {
    spans_reach_an_https_collector(
        OtlpProtocol::HttpProtobuf,
        "SSL_CERT_FILE",
        "traces-tls-http-ssl",
    )
    .await;
}

#[tokio::test]
async fn spans_reach_an_https_http_protobuf_collector_trusted_through_otel_certificate() {
    spans_reach_an_https_collector(
        OtlpProtocol::HttpProtobuf,
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "traces-tls-http-otel",
    )
    .await;
}

/// The lines of `logs` that say the collector's certificate is refused.
fn refusals(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| l.contains("certificate is not trusted"))
        .collect()
}

/// With neither `SSL_CERT_FILE` nor `OTEL_EXPORTER_OTLP_CERTIFICATE` naming the test CA (or
/// with `OTEL_EXPORTER_OTLP_CERTIFICATE` naming another CA, which replaces the default roots),
/// the API serves as usual, says once why nothing is exported, and sends the collector nothing.
async fn an_untrusted_collector_is_one_warning_and_no_export(
    protocol: OtlpProtocol,
    other_ca: bool,
    name: &str,
) {
    let pki = Pki::new();
    let collector = Collector::start_tls(protocol, &pki).await;
    let db = TestDatabase::new().await;
    let id = stored_order(&db).await;
    let mut env = collector.env("order-api-test");
    if other_ca {
        env.push(("SSL_CERT_FILE".to_owned(), pki.ca().display().to_string()));
        env.push((
            "OTEL_EXPORTER_OTLP_CERTIFICATE".to_owned(),
            pki.other_ca().display().to_string(),
        ));
    }
    let api = Api::start(&db, name, &env).await;
    for _ in 0..20 {
        let started = Instant::now();
        let reply = api
            .get(&format!("/orders/{id}"), Some(traceparent().as_str()))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several export intervals (100 ms each) pass with spans queued.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let logs = api.stop().await;
    assert!(started.elapsed() < Duration::from_secs(10), "{logs}");
    let lines = refusals(&logs);
    assert_eq!(lines.len(), 1, "one warning line: {logs}");
    assert!(
        lines[0].contains("WARN") || lines[0].contains("warn"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(&collector.endpoint()), "{}", lines[0]);
    assert_eq!(collector.requests(), 0, "{:#?}", collector.spans());
}

#[tokio::test]
async fn an_untrusted_grpc_collector_is_one_warning_and_no_export() {
    an_untrusted_collector_is_one_warning_and_no_export(
        OtlpProtocol::Grpc,
        false,
        "traces-tls-grpc-untrusted",
    )
    .await;
}

#[tokio::test]
async fn an_http_protobuf_collector_signed_by_another_ca_is_one_warning_and_no_export() {
    an_untrusted_collector_is_one_warning_and_no_export(
        OtlpProtocol::HttpProtobuf,
        true,
        "traces-tls-http-untrusted",
    )
    .await;
}

#[test]
fn an_unreadable_collector_certificate_stops_the_binary_with_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_order-api"))
        .env_clear()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://localhost:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "/nonexistent/collector-ca.pem",
        )
        .args([
            "--auth-disabled",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/nothing",
        ])
        .output()
        .unwrap();
    let line = order_test_support::tls::refusal("order-api", &out);
    assert!(line.contains("/nonexistent/collector-ca.pem"), "{line}");
    assert!(line.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"), "{line}");
    assert_eq!(out.status.code(), Some(2), "{line}");
}

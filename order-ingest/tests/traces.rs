//! OpenTelemetry traces of the real `order-ingest` binary, exported to a real OTLP collector
//! over both protocols: a batch span linked to each event's own trace (the CloudEvents
//! distributed-tracing extension), an insert span under it, a span per dead letter, replay
//! traced the same way, an `https://` collector trusted through OTEL_EXPORTER_OTLP_CERTIFICATE
//! or refused with one warning, and a collector that is down costing no order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use order_test_support::otlp::{Collector, OtlpProtocol, ReceivedSpan};
use order_test_support::tls::Pki;
use serde_json::Value;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const PRODUCER_SPAN: &str = "b7ad6b7169203331";

/// A new trace id, so that parallel tests never share one.
fn trace_id() -> String {
    Uuid::new_v4().simple().to_string()
}

/// `payload` with the CloudEvents distributed-tracing extension of checkout's span.
fn traced(payload: &str, trace: &str) -> String {
    let mut event: Value = serde_json::from_str(payload).unwrap();
    event["traceparent"] = format!("00-{trace}-{PRODUCER_SPAN}-01").into();
    event["tracestate"] = "checkout=1".into();
    event.to_string()
}

/// The binary on `db_url` and `stream`, with `env` added.
fn traced_ingest(db_url: &str, stream: &TestStream, env: &[(String, String)]) -> Command {
    let mut cmd = ingest(db_url, stream, "traced");
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

struct Process(Child);

impl Process {
    fn spawn(mut cmd: Command, name: &str) -> Process {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        Process(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap())
    }

    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let started = Instant::now();
        while self.0.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < WAIT, "order-ingest did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn linked_to<'a>(spans: &'a [ReceivedSpan], trace: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.links
            .iter()
            .any(|(t, s)| t == trace && s == PRODUCER_SPAN)
    })
}

/// The batch span linked to `trace`, and the insert span under it.
fn assert_batch_traced(spans: &[ReceivedSpan], stream: &TestStream, trace: &str) {
    let batch = linked_to(spans, trace).unwrap_or_else(|| panic!("no linked batch: {spans:#?}"));
    assert_eq!(batch.name, format!("process {}", stream.key));
    assert_eq!(batch.service_name, "order-ingest-test");
    assert_eq!(batch.kind, 5, "a consumer span: {batch:#?}");
    assert_eq!(batch.attribute("messaging.system"), Some("redis"));
    assert_eq!(
        batch.attribute("messaging.destination.name"),
        Some(stream.key.as_str())
    );
    assert!(batch
        .int_attribute("messaging.batch.message_count")
        .is_some());
    let insert = spans
        .iter()
        .find(|s| s.parent_span_id == batch.span_id && s.name == "INSERT orders")
        .unwrap_or_else(|| panic!("no insert span under the batch: {spans:#?}"));
    assert_eq!(insert.trace_id, batch.trace_id);
    assert_eq!(insert.attribute("db.system"), Some("postgresql"));
}

async fn events_are_linked_to_their_traces(protocol: OtlpProtocol) {
    let collector = Collector::start(protocol).await;
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let (id, event) = synthetic_event(3);
    let trace = trace_id();
    stream.publish_event(&traced(&event, &trace));
    // A poison event: its dead letter gets a span in the batch's trace.
    stream.publish("poison-1", ORDER_TYPE, "{not json");

    let process = Process::spawn(
        traced_ingest(db.url(), &stream, &collector.env("order-ingest-test")),
        &format!("traces-ingest-{}", protocol.as_str().replace('/', "-")),
    );
    wait_rows(&pool, 1, WAIT).await;
    assert!(stored(&pool, id).await.is_some());
    let spans = collector
        .wait_for(WAIT, |spans| {
            linked_to(spans, &trace).is_some()
                && spans.iter().any(|s| s.name == "INSERT orders")
                && spans.iter().any(|s| s.name == "dead letter")
        })
        .await;
    assert_batch_traced(&spans, &stream, &trace);
    let letter = spans
        .iter()
        .find(|s| s.name == "dead letter")
        .unwrap_or_else(|| panic!("no dead-letter span: {spans:#?}"));
    assert_eq!(letter.attribute("error.type"), Some("invalid_json"));
    assert_eq!(letter.status_code, 2, "{letter:#?}");
    let parent = spans
        .iter()
        .find(|s| s.span_id == letter.parent_span_id)
        .unwrap_or_else(|| panic!("the dead letter's parent: {spans:#?}"));
    assert!(parent.name.starts_with("process "), "{parent:#?}");
    process.stop().await;

    // --replay traces its batches the same way.
    let replay = traced_ingest(db.url(), &stream, &collector.env("order-ingest-test"))
        .args(["--replay", "--from", "0"])
        .output()
        .unwrap();
    // Exit 1: the poison event cannot be stored (replay reports it, never dead-letters it).
    assert_eq!(
        replay.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let spans = collector
        .wait_for(WAIT, |spans| {
            spans
                .iter()
                .filter(|s| s.links.iter().any(|(t, _)| *t == trace))
                .count()
                >= 2
        })
        .await;
    let batches: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.links.iter().any(|(t, _)| *t == trace))
        .collect();
    assert_eq!(
        batches.len(),
        2,
        "the consumer's and the replay's: {spans:#?}"
    );
    for batch in batches {
        assert!(spans
            .iter()
            .any(|s| s.parent_span_id == batch.span_id && s.name == "INSERT orders"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_linked_to_their_traces_over_grpc() {
    events_are_linked_to_their_traces(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_linked_to_their_traces_over_http_protobuf() {
    events_are_linked_to_their_traces(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_no_order() {
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let closed = spare_port();
    let env: Vec<(String, String)> = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{closed}"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut ids = Vec::new();
    for store in 1..=50 {
        let (id, event) = synthetic_event(store);
        stream.publish_event(&traced(&event, &trace_id()));
        ids.push(id);
    }
    let process = Process::spawn(traced_ingest(db.url(), &stream, &env), "traces-ingest-down");
    wait_rows(&pool, 50, WAIT).await;
    for id in ids {
        assert!(stored(&pool, id).await.is_some());
    }
    let started = Instant::now();
    process.stop().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(stream.pending("order-service"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_traced_to_an_https_grpc_collector_trusted_through_its_certificate() {
    let pki = Pki::new();
    let collector = Collector::start_tls(OtlpProtocol::Grpc, &pki).await;
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let (id, event) = synthetic_event(4);
    let trace = trace_id();
    stream.publish_event(&traced(&event, &trace));
    let mut env = collector.env("order-ingest-test");
    env.push((
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE".to_owned(),
        pki.ca().display().to_string(),
    ));
    let process = Process::spawn(
        traced_ingest(db.url(), &stream, &env),
        "traces-ingest-https-grpc",
    );
    wait_rows(&pool, 1, WAIT).await;
    assert!(stored(&pool, id).await.is_some());
    let spans = collector
        .wait_for(WAIT, |spans| {
            linked_to(spans, &trace).is_some() && spans.iter().any(|s| s.name == "INSERT orders")
        })
        .await;
    assert_batch_traced(&spans, &stream, &trace);
    process.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_https_collector_costs_no_order_and_one_warning() {
    let pki = Pki::new();
    let collector = Collector::start_tls(OtlpProtocol::HttpProtobuf, &pki).await;
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let mut ids = Vec::new();
    for store in 1..=20 {
        let (id, event) = synthetic_event(store);
        stream.publish_event(&traced(&event, &trace_id()));
        ids.push(id);
    }
    // Neither SSL_CERT_FILE nor OTEL_EXPORTER_OTLP_CERTIFICATE names the test CA.
    let name = "traces-ingest-https-untrusted";
    let process = Process::spawn(
        traced_ingest(db.url(), &stream, &collector.env("order-ingest-test")),
        name,
    );
    wait_rows(&pool, 20, WAIT).await;
    for id in ids {
        assert!(stored(&pool, id).await.is_some());
    }
    // Several export intervals (100 ms each) pass with spans queued.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    process.stop().await;
    let log = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.log")),
    )
    .unwrap();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("certificate is not trusted"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning line: {log}");
    assert_eq!(stream.pending("order-service"), 0);
    assert_eq!(collector.requests(), 0, "{:#?}", collector.spans());
}

#[tokio::test]
async fn the_outbox_relay_publish_span_links_the_trace_of_each_change() {
    let collector = Collector::start(OtlpProtocol::Grpc).await;
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let updates = format!("{}:updated", stream.key);
    let order = order_test_support::orders::sample_order(9);
    let trace = trace_id();
    {
        let mut conn = pool.get().await.unwrap();
        order_store::orders::insert_if_absent(&mut conn, std::slice::from_ref(&order))
            .await
            .unwrap();
        let changed = order_store::orders::append_note(&mut conn, order.id, "traced")
            .await
            .unwrap();
        let parent = format!("00-{trace}-{PRODUCER_SPAN}-01");
        order_store::outbox::record(&mut conn, &changed, Some(&parent))
            .await
            .unwrap();
    }
    let mut env = collector.env("order-ingest-test");
    env.push(("ORDER_UPDATES_STREAM_KEY".to_owned(), updates.clone()));
    let process = Process::spawn(traced_ingest(db.url(), &stream, &env), "traces-outbox");
    let spans = collector
        .wait_for(WAIT, |spans| linked_to(spans, &trace).is_some())
        .await;
    let publish = linked_to(&spans, &trace).unwrap();
    assert_eq!(publish.name, format!("publish {updates}"));
    assert_eq!(publish.kind, 4, "a producer span: {publish:#?}");
    assert_eq!(publish.attribute("messaging.system"), Some("redis"));
    assert_eq!(
        publish.attribute("messaging.destination.name"),
        Some(updates.as_str())
    );
    assert_eq!(
        publish.int_attribute("messaging.batch.message_count"),
        Some(1)
    );
    process.stop().await;
    // The event carries the change's trace context as the CloudEvents `traceparent` extension.
    let entries: redis::streams::StreamRangeReply =
        redis::Commands::xrange_all(&mut stream.conn(), &updates).unwrap();
    assert_eq!(entries.ids.len(), 1);
    let payload: String = entries.ids[0].get("payload").unwrap();
    let event: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        event["traceparent"],
        format!("00-{trace}-{PRODUCER_SPAN}-01"),
        "{event}"
    );
    let _: () = redis::Commands::del(&mut stream.conn(), &updates).unwrap();
}

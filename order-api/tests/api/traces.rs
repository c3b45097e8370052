//! OpenTelemetry traces of the real binary, exported to a real OTLP collector over both
//! protocols: the caller's trace continued, a database span under each request, GraphQL
//! operations named, JSON logs carrying the ids, and a collector that is down costing nothing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use order_store::orders;
use order_test_support::db::TestDatabase;
use order_test_support::otlp::{Collector, OtlpProtocol, ReceivedSpan};
use serde_json::json;

use crate::common::{send, variant, Reply, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_order-api");
/// The caller's span, as a W3C traceparent.
pub(crate) const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub(crate) const CALLER_SPAN: &str = "00f067aa0ba902b7";

pub(crate) fn traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

pub(crate) struct Api {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Api {
    /// The binary on `db` with `env` added to a clean OpenTelemetry environment.
    pub(crate) async fn start(db: &TestDatabase, name: &str, env: &[(String, String)]) -> Api {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.log"));
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,order_api=debug")
            .env("LOG_FORMAT", "json")
            .args([
                "--auth-disabled",
                "--database-url",
                db.url(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--shutdown-delay-ms",
                "0",
            ])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = command.spawn().unwrap();
        let api = Api { child, port, log };
        let started = Instant::now();
        loop {
            let ready = tokio::time::timeout(
                Duration::from_secs(2),
                hyper::Client::new().get(api.url("/health/ready").parse().unwrap()),
            )
            .await
            .is_ok_and(|r| r.is_ok_and(|r| r.status() == 200));
            if ready {
                return api;
            }
            assert!(
                started.elapsed() < WAIT,
                "order-api did not come up: {}",
                std::fs::read_to_string(&api.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET path`, with the caller's `traceparent` when given.
    pub(crate) async fn get(&self, path: &str, traceparent: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> = traceparent
            .map(|t| ("traceparent", t))
            .into_iter()
            .collect();
        send(Method::GET, &self.url(path), None, None, None, &headers).await
    }

    /// SIGTERM and the exit, which flushes the last spans.
    pub(crate) async fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < WAIT, "order-api did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn stored_order(db: &TestDatabase) -> uuid::Uuid {
    let order = variant("immediate-minimal", 7, None, chrono::Utc::now());
    let mut conn = db.connection().await;
    orders::insert_if_absent(&mut conn, std::slice::from_ref(&order))
        .await
        .unwrap();
    order.id
}

pub(crate) fn find<'a>(spans: &'a [ReceivedSpan], name: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.name == name)
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

#[tokio::test]
async fn a_rest_read_continues_the_callers_trace_over_grpc() {
    let collector = Collector::start(OtlpProtocol::Grpc).await;
    let db = TestDatabase::new().await;
    let id = stored_order(&db).await;
    let api = Api::start(&db, "traces-rest-grpc", &collector.env("order-api-test")).await;

    let parent = traceparent();
    let reply = api
        .get(&format!("/orders/{id}"), Some(parent.as_str()))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // An error body names the trace, so a support ticket leads to it.
    let missing = uuid::Uuid::new_v4();
    let reply = api
        .get(&format!("/orders/{missing}"), Some(parent.as_str()))
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert_eq!(reply.json()["traceId"], CALLER_TRACE, "{}", reply.text);

    let spans = collector
        .wait_for(WAIT, |spans| {
            spans
                .iter()
                .filter(|s| s.name == "GET /orders/{orderId}")
                .count()
                >= 2
                && spans.iter().filter(|s| s.name == "SELECT orders").count() >= 2
        })
        .await;
    let server: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == "GET /orders/{orderId}")
        .collect();
    assert_eq!(server.len(), 2, "{spans:#?}");
    for span in &server {
        assert_eq!(span.service_name, "order-api-test");
        assert_eq!(span.trace_id, CALLER_TRACE, "{span:#?}");
        assert_eq!(span.parent_span_id, CALLER_SPAN, "{span:#?}");
        assert_eq!(span.kind, 2, "a server span: {span:#?}");
        assert_eq!(span.attribute("http.request.method"), Some("GET"));
        assert_eq!(span.attribute("http.route"), Some("/orders/{orderId}"));
        let db_spans = children(&spans, span);
        assert_eq!(db_spans.len(), 1, "one database span: {spans:#?}");
        let db_span = db_spans[0];
        assert_eq!(db_span.name, "SELECT orders");
        assert_eq!(db_span.kind, 3, "a client span: {db_span:#?}");
        assert_eq!(db_span.attribute("db.system"), Some("postgresql"));
        assert_eq!(db_span.attribute("db.operation.name"), Some("SELECT"));
        // The operation, never the parameters.
        assert!(
            !db_span
                .attributes
                .values()
                .any(|v| v.contains(&id.to_string())),
            "{db_span:#?}"
        );
    }
    // An integer, as the HTTP conventions type it, so that `>= 500` queries match it.
    let statuses: Vec<Option<i64>> = server
        .iter()
        .map(|s| s.int_attribute("http.response.status_code"))
        .collect();
    assert!(
        statuses.contains(&Some(200)) && statuses.contains(&Some(404)),
        "{server:#?}"
    );
    // The trace id is the span's own; it is not repeated as an attribute.
    for span in &server {
        assert_eq!(span.attribute("trace_id"), None, "{span:#?}");
    }
    api.stop().await;
}

#[tokio::test]
async fn a_graphql_mutation_is_named_and_logged_with_its_trace_over_http_protobuf() {
    let collector = Collector::start(OtlpProtocol::HttpProtobuf).await;
    let db = TestDatabase::new().await;
    let id = stored_order(&db).await;
    let api = Api::start(&db, "traces-graphql-http", &collector.env("order-api-test")).await;

    let body = json!({
        "query": "mutation Ship($id: ID!) { updateOrderStatus(id: $id, status: PROCESSING) { id status } }",
        "variables": {"id": id},
        "operationName": "Ship",
    });
    let parent = traceparent();
    let reply = send(
        Method::POST,
        &api.url("/graphql"),
        None,
        Some("application/json"),
        Some(body.to_string().into_bytes()),
        &[("traceparent", parent.as_str())],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json()["data"]["updateOrderStatus"]["status"],
        "PROCESSING",
        "{}",
        reply.text
    );

    let spans = collector
        .wait_for(WAIT, |spans| find(spans, "UPDATE orders").is_some())
        .await;
    let server = find(&spans, "POST /graphql").unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(server.trace_id, CALLER_TRACE);
    assert_eq!(server.parent_span_id, CALLER_SPAN);
    assert_eq!(server.attribute("graphql.operation.name"), Some("Ship"));
    assert_eq!(server.attribute("graphql.operation.type"), Some("mutation"));
    let operation = find(&spans, "mutation Ship").unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(operation.parent_span_id, server.span_id);
    let update = find(&spans, "UPDATE orders").unwrap();
    assert_eq!(update.parent_span_id, operation.span_id, "{spans:#?}");
    assert_eq!(update.trace_id, CALLER_TRACE);
    // The change's OrderUpdated event carries the trace context of the operation that made it.
    let outbox = order_store::outbox::oldest(&mut db.connection().await, 10)
        .await
        .unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert_eq!(
        outbox[0].traceparent.as_deref(),
        Some(format!("00-{CALLER_TRACE}-{}-01", operation.span_id).as_str()),
        "{spans:#?}"
    );

    // The request's log line carries the ids of the span it was written in.
    let logs = api.stop().await;
    let request_line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "request" && l["path"] == "/graphql")
        .unwrap_or_else(|| panic!("no request line: {logs}"));
    assert_eq!(request_line["trace_id"], CALLER_TRACE, "{request_line}");
    assert_eq!(
        request_line["span_id"],
        server.span_id.as_str(),
        "{request_line}"
    );
}

#[tokio::test]
async fn a_collector_that_is_down_costs_no_request_and_none_exports_nothing() {
    let db = TestDatabase::new().await;
    let id = stored_order(&db).await;
    // Nothing listens on this port: every export fails.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let down: Vec<(String, String)> = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{closed}"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let api = Api::start(&db, "traces-collector-down", &down).await;
    for _ in 0..20 {
        let reply = api.get(&format!("/orders/{id}"), None).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let started = Instant::now();
    let logs = api.stop().await;
    // The flush on exit gives up rather than holding the process.
    assert!(started.elapsed() < Duration::from_secs(10), "{logs}");

    // OTEL_TRACES_EXPORTER=none wins over an endpoint: nothing reaches the collector.
    let collector = Collector::start(OtlpProtocol::Grpc).await;
    let mut env = collector.env("order-api-test");
    env.push(("OTEL_TRACES_EXPORTER".to_owned(), "none".to_owned()));
    env.push((
        "RUST_LOG".to_owned(),
        "info,order_api=debug,order_store=debug".to_owned(),
    ));
    let api = Api::start(&db, "traces-exporter-none", &env).await;
    let reply = api
        .get(&format!("/orders/{id}"), Some(traceparent().as_str()))
        .await;
    assert_eq!(reply.status, 200);
    let logs = api.stop().await;
    assert!(logs.contains("trace export off"), "{logs}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(collector.requests(), 0, "{:#?}", collector.spans());
}

//! Operator commands of the real binary: `migrate`, `dlq list`, `dlq redrive`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use order_test_support::db::TestDatabase;
use redis::Commands;

const BIN: &str = env!("CARGO_BIN_EXE_order-ingest");

fn ingest(db_url: &str, stream: &TestStream) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("REDIS_URL", redis_url())
        .env("ORDER_STREAM_KEY", &stream.key);
    cmd
}

async fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("order-ingest finished in time")
    .unwrap()
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_the_schema_once_and_the_consumer_then_starts() {
    let db = TestDatabase::empty().await;
    let stream = TestStream::new();
    let mut consume = ingest(db.url(), &stream);
    consume.env(
        "ORDER_INGEST_METRICS_ADDR",
        format!("127.0.0.1:{}", spare_port()),
    );
    let refused = run(consume).await;
    assert_ne!(refused.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--migrate") && stderr.lines().count() == 1,
        "{stderr}"
    );

    for _ in 0..2 {
        let mut migrate = ingest(db.url(), &stream);
        migrate.arg("migrate");
        let output = run(migrate).await;
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        assert!(stdout(&output).contains("schema is current"));
    }
    assert!(order_store::migrations::pending(db.url())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven_to_the_stream() {
    let (db, pool) = database().await;
    let stream = TestStream::new();
    // Two dead letters as the consumer writes them: one poison, one that failed only because
    // of a state since fixed (its order is valid).
    let (order_id, good) = synthetic_event(8);
    let mut conn = stream.conn();
    let poison: String = conn
        .xadd(
            stream.dlq(),
            "*",
            &[
                ("eventId", "e-1"),
                ("payload", "not json"),
                ("error", "expected value at line 1 column 1"),
                ("errorClass", "invalid_json"),
                ("streamId", "1-0"),
                ("failedAt", "2026-01-01T00:00:00.000Z"),
            ],
        )
        .unwrap();
    let retry: String = conn
        .xadd(
            stream.dlq(),
            "*",
            &[
                ("eventId", "e-2"),
                ("payload", good.as_str()),
                ("error", "delivered 6 times"),
                ("errorClass", "max_deliveries_exceeded"),
                ("streamId", "2-0"),
                ("failedAt", "2026-01-01T00:00:01.000Z"),
                ("deliveryCount", "6"),
            ],
        )
        .unwrap();

    let mut list = ingest(db.url(), &stream);
    list.args(["dlq", "list"]);
    let listed = stdout(&run(list).await);
    assert!(
        listed.contains(&poison) && listed.contains("invalid_json"),
        "{listed}"
    );
    assert!(
        listed.contains(&retry) && listed.contains("deliveries=6"),
        "{listed}"
    );
    assert!(listed.contains("2 dead letter(s)"), "{listed}");

    // The consumer creates its group at the stream's end (`$`), so it starts first.
    let running = Running::start(args(&stream, "c1"), pool.clone());
    wait_until(Duration::from_secs(30), "the group", || {
        let groups = stream.groups();
        async move { !groups.is_empty() }
    })
    .await;

    let mut redrive = ingest(db.url(), &stream);
    redrive.args([
        "dlq",
        "redrive",
        "--id",
        &retry,
        "--id",
        "9-9",
        "--id",
        "not-an-id",
    ]);
    let output = run(redrive).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "an unknown id is reported: {output:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("9-9, not-an-id"), "{stderr}");

    let remaining = stream.dead_letters();
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0]["eventId"], "e-1");
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(&stream.key).unwrap();
    assert_eq!(entries.ids.len(), 1);
    let fields = &entries.ids[0].map;
    let text = |k: &str| redis::from_redis_value::<String>(fields[k].clone()).unwrap();
    assert_eq!(text("payload"), good, "payload verbatim");
    assert_eq!(text("eventId"), "e-2");
    assert_eq!(text("eventType"), ORDER_TYPE);

    // The redriven entry is consumed like any other.
    wait_rows(&pool, 1, Duration::from_secs(30)).await;
    assert!(stored(&pool, order_id).await.is_some());
    running.stop().await;

    let mut all = ingest(db.url(), &stream);
    all.args(["dlq", "redrive", "--all"]);
    let output = run(all).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(stream.dead_letters().is_empty());
}

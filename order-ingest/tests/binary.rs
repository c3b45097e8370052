//! Process behaviour of the real `order-ingest` binary: signals, replay, flags, health.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use order_test_support::db::TestDatabase;
use order_test_support::fixtures;
use redis::Commands;

const WAIT: Duration = Duration::from_secs(30);
const BIN: &str = env!("CARGO_BIN_EXE_order-ingest");

/// Starts the binary; its logs go to `target/tmp/<name>.log` for when a test fails.
fn spawn(mut cmd: Command, name: &str) -> Child {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("order-ingest did not exit within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the binary to completion with a time limit.
async fn run(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output());
    tokio::time::timeout(limit, output)
        .await
        .expect("order-ingest finished in time")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_batch_in_flight_and_exits_0_with_nothing_pending() {
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let mut cmd = ingest(db.url(), &stream, "pod-a");
    cmd.env("ORDER_BATCH_SIZE", "5");
    let mut child = spawn(cmd, &stream.key);
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;
    for _ in 0..200 {
        let (_, e) = synthetic_event(8);
        stream.publish_event(&e);
    }
    // Stop it while it is working through the backlog.
    wait_until(WAIT, "some rows", || async { row_count(&pool).await >= 5 }).await;
    signal(&child, "TERM");
    let status = wait_exit(&mut child, WAIT).await;
    assert_eq!(status.code(), Some(0), "exit 0 on SIGTERM");
    assert_eq!(
        stream.pending_for("order-service", "pod-a"),
        0,
        "nothing left pending"
    );
    assert!(stream.dead_letters().is_empty());
    // Everything it read was committed: a second consumer finishes the rest, exactly.
    let running = Running::start(args(&stream, "pod-b"), pool.clone());
    wait_rows(&pool, 200, WAIT).await;
    assert_eq!(running.get(|m| &m.duplicates), 0, "nothing read twice");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_unacked_entries_then_another_consumer_claims_them() {
    let (db, pool) = database().await;
    let stream = TestStream::new();
    // The killed pod reaches the database through a proxy that is cut, so it is certainly
    // holding read but unacknowledged entries when it dies.
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let mut cmd = ingest(&proxy.url_for(db.url(), 5432), &stream, "pod-doomed");
    cmd.env("ORDER_BATCH_SIZE", "50");
    let mut child = spawn(cmd, &stream.key);
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;
    let mut ids = HashSet::new();
    for _ in 0..20 {
        let (id, e) = synthetic_event(12);
        stream.publish_event(&e);
        ids.insert(id);
    }
    wait_rows(&pool, 20, WAIT).await;
    proxy.cut();
    for _ in 0..30 {
        let (id, e) = synthetic_event(12);
        stream.publish_event(&e);
        ids.insert(id);
    }
    wait_until(WAIT, "entries held by the doomed pod", || async {
        stream.pending_for("order-service", "pod-doomed") > 0
    })
    .await;
    signal(&child, "KILL");
    let _ = wait_exit(&mut child, WAIT).await;
    let held = stream.pending_for("order-service", "pod-doomed");
    assert!(held > 0);
    assert_eq!(row_count(&pool).await, 20);

    let mut a = args(&stream, "pod-survivor");
    a.claim_idle_ms = 500;
    let running = Running::start(a, pool.clone());
    wait_rows(&pool, 50, WAIT).await;
    wait_until(WAIT, "all acked", || async {
        stream.pending("order-service") == 0
    })
    .await;
    for id in ids {
        assert!(stored(&pool, id).await.is_some(), "{id}");
    }
    assert_eq!(
        running.get(|m| &m.claimed),
        held as u64,
        "claimed what the dead pod held"
    );
    assert_eq!(running.get(|m| &m.duplicates), 0);
    assert!(stream.dead_letters().is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_0_inserts_every_order_once_and_a_second_replay_inserts_nothing() {
    let (db, pool) = database().await;
    let stream = TestStream::new();
    stream.publish_init();
    let n = 25;
    let mut ids = HashSet::new();
    for _ in 0..n {
        let (id, e) = synthetic_event(4);
        ids.insert(id.to_string());
        stream.publish_event(&e);
    }
    stream.publish_event(&fixtures::read("other-event-type.json"));

    let replay = |from: &str| {
        let mut cmd = ingest(db.url(), &stream, "replayer");
        cmd.args(["--replay", "--from", from, "--batch-size", "10"]);
        cmd.env("LOG_FORMAT", "json");
        cmd
    };
    let first = run(replay("0"), WAIT).await;
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(0), "{stdout}");
    // One whole JSON line per stored order, each written out before the process exited.
    assert_eq!(order_lines(&first.stderr, "inserted order"), ids);
    assert!(
        stdout.contains(&format!(
            "read={} inserted={n} already_present=0 skipped=2 failed=0",
            n + 2
        )),
        "{stdout}"
    );
    assert_eq!(row_count(&pool).await, i64::from(n));
    assert!(
        stream.groups().is_empty(),
        "replay does not create or join the group"
    );

    let second = run(replay("0"), WAIT).await;
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(
        order_lines(&second.stderr, "duplicate order: already stored"),
        ids
    );
    assert!(
        stdout.contains(&format!("inserted=0 already_present={n}")),
        "{stdout}"
    );
    assert_eq!(row_count(&pool).await, i64::from(n));

    // A permanent failure is reported and makes the exit status 1, without a dead letter.
    let poison_id = stream.publish("bad", "x", "not json");
    let third = run(replay(&poison_id), WAIT).await;
    let stdout = String::from_utf8_lossy(&third.stdout);
    assert_eq!(third.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("read=1 inserted=0 already_present=0 skipped=0 failed=1"),
        "{stdout}"
    );
    assert!(stream.dead_letters().is_empty());

    // --from as a time: everything published since the start of this test.
    let from_time = run(replay("2000-01-01T00:00Z"), WAIT).await;
    let stdout = String::from_utf8_lossy(&from_time.stdout);
    assert!(stdout.contains(&format!("already_present={n}")), "{stdout}");
}

/// The `orderId`s of the JSON log lines saying `message`; every line must be a JSON object.
fn order_lines(stderr: &[u8], message: &str) -> HashSet<String> {
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let of_orders: Vec<String> = lines
        .iter()
        .filter(|line| line["message"] == message)
        .map(|line| line["orderId"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<String> = of_orders.iter().cloned().collect();
    assert_eq!(unique.len(), of_orders.len(), "one line per order");
    unique
}

/// Flags and environment of one bad start-up.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flag_values_give_one_line_and_a_non_zero_exit() {
    let db = TestDatabase::new().await;
    let stream = TestStream::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: Vec<Case> = vec![
        // The metrics port is taken.
        (vec!["--metrics-addr", &taken], vec![]),
        (vec!["--batch-size", "abc"], vec![]),
        (vec!["--batch-size", "0"], vec![]),
        (vec!["--block-ms", "-5"], vec![]),
        (vec!["--log-format", "xml"], vec![]),
        (vec!["--metrics-addr", "nowhere"], vec![]),
        (vec!["--replay", "--from", "yesterday"], vec![]),
        (vec!["--to", "5-0"], vec![]),
        (vec!["--no-such-flag"], vec![]),
        (vec![], vec![("ORDER_MAX_DELIVERIES", "many")]),
        (vec![], vec![("ORDER_CLAIM_IDLE_MS", "0")]),
        (vec![], vec![("RUST_LOG", "order_ingest=loud")]),
        (vec![], vec![("LOG_FORMAT", "yaml")]),
        (
            vec![],
            vec![("ORDER_INGEST_METRICS_ADDR", "127.0.0.1:99999")],
        ),
        (vec!["backfill"], vec![]),
        (
            vec![
                "backfill",
                "--source-database-url",
                "postgres://x",
                "--after",
                "nope",
            ],
            vec![],
        ),
        // Dependencies unreachable at start-up.
        (
            vec!["--database-url", "postgres://postgres@127.0.0.1:1/orderdb"],
            vec![],
        ),
        (vec!["--redis-url", "redis://127.0.0.1:1"], vec![]),
        (vec!["--redis-url", "http://nope"], vec![]),
        (vec!["--redis-mode", "sideways"], vec![]),
        // The shared Redis is one server, not a cluster node.
        (vec![], vec![("REDIS_MODE", "cluster")]),
    ];
    for (flags, env) in cases {
        let mut cmd = ingest(db.url(), &stream, "flags");
        cmd.args(&flags).env("DB_CONNECT_TIMEOUT_MS", "1000");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = run(cmd, WAIT).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{flags:?} {env:?} must fail: {stderr}"
        );
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{flags:?} {env:?}: one line, got {stderr:?}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let help = run(
        {
            let mut c = Command::new(BIN);
            c.arg("--help");
            c
        },
        WAIT,
    )
    .await;
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for env in [
        "DATABASE_URL",
        "REDIS_URL",
        "ORDER_STREAM_KEY",
        "ORDER_CONSUMER_GROUP",
        "ORDER_CONSUMER_NAME",
        "ORDER_EVENT_TYPE",
        "ORDER_BATCH_SIZE",
        "ORDER_BLOCK_MS",
        "ORDER_CLAIM_IDLE_MS",
        "ORDER_MAX_DELIVERIES",
        "ORDER_INGEST_METRICS_ADDR",
        "ORDER_MIGRATE",
        "LOG_FORMAT",
        "REDIS_MODE",
    ] {
        assert!(help.contains(env), "--help names {env}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_endpoints() {
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let port = spare_port();
    // The database behind a proxy the test cuts, to see the health checks go DOWN.
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let mut cmd = ingest(&proxy.url_for(db.url(), 5432), &stream, "pod-m");
    cmd.env("ORDER_INGEST_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json");
    let mut child = spawn(cmd, &stream.key);
    wait_until(WAIT, "ready", || async {
        matches!(http_get(port, "/health/ready").await, Some((200, _)))
    })
    .await;
    assert_eq!(http_get(port, "/health/live").await.unwrap().0, 200);
    let (_, e) = synthetic_event(3);
    stream.publish_event(&e);
    stream.publish_init();
    stream.publish("p", "org.example.checkout.OrderCompleted", "garbage");
    wait_rows(&pool, 1, WAIT).await;
    wait_until(WAIT, "metrics", || async {
        let Some((200, body)) = http_get(port, "/metrics").await else {
            return false;
        };
        body.contains("order_ingest_events_inserted_total 1")
            && body.contains("order_ingest_events_skipped_total 1")
            && body
                .contains("order_ingest_events_dead_lettered_total{error_class=\"invalid_json\"} 1")
            && body.contains("order_ingest_events_read_total 3")
            && body.contains("order_ingest_group_pending 0")
            && body.contains("order_ingest_group_lag 0")
            && body.contains("order_ingest_batch_duration_seconds_count")
            && body.contains("order_ingest_redis_up 1")
            && body.contains("order_ingest_redis_errors_total{command=\"XREADGROUP\"} ")
            && body.contains("db_pool_gets_total{outcome=\"direct\"} ")
            && body.contains("# TYPE db_pool_wait_seconds_total counter")
            && body.contains("order_service_build_info{git_sha=")
    })
    .await;
    // Spring Boot Actuator's paths: the same checks and numbers (docs/compatibility.md §7).
    assert_eq!(
        http_get(port, "/actuator/health").await.unwrap(),
        (200, "{\"status\":\"UP\"}".to_owned())
    );
    assert_eq!(
        http_get(port, "/actuator/health/readiness").await.unwrap(),
        (200, "{\"status\":\"UP\"}".to_owned())
    );
    assert_eq!(
        http_get(port, "/actuator/health/liveness").await.unwrap(),
        (200, "{\"status\":\"UP\"}".to_owned())
    );
    let (status, info) = http_get(port, "/actuator/info").await.unwrap();
    assert_eq!(status, 200);
    assert!(info.contains("\"order-ingest\""), "{info}");
    let (status, prometheus) = http_get(port, "/actuator/prometheus").await.unwrap();
    assert_eq!(status, 200);
    assert!(prometheus.contains("order_ingest_events_inserted_total 1"));
    proxy.cut();
    wait_until(WAIT, "actuator DOWN", || async {
        http_get(port, "/actuator/health").await == Some((503, "{\"status\":\"DOWN\"}".to_owned()))
    })
    .await;
    assert_eq!(
        http_get(port, "/actuator/health/readiness")
            .await
            .unwrap()
            .0,
        503
    );
    assert_eq!(
        http_get(port, "/actuator/health/liveness").await.unwrap().0,
        200
    );
    proxy.restore();
    wait_until(WAIT, "actuator UP again", || async {
        matches!(http_get(port, "/actuator/health").await, Some((200, _)))
    })
    .await;
    // The group gone: not ready.
    let _: () = stream.conn().del(&stream.key).unwrap();
    let (status, body) = http_get(port, "/health/ready").await.unwrap();
    assert!(
        status == 503 || body.contains("\"group\":true"),
        "{status} {body}"
    );
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, WAIT).await.code(), Some(0));
}

/// SIGTERM while the database is down: the batch in flight cannot be finished, so after the
/// drain time the process exits (non-zero, well inside a 30 s grace period) with the batch
/// still pending for another consumer, and nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_database_outage_exits_within_the_grace_period() {
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let mut child = spawn(
        ingest(&proxy.url_for(db.url(), 5432), &stream, "pod-t"),
        &stream.key,
    );
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;
    proxy.cut();
    let (id, e) = synthetic_event(2);
    stream.publish_event(&e);
    wait_until(WAIT, "entry held", || async {
        stream.pending_for("order-service", "pod-t") == 1
    })
    .await;
    let start = Instant::now();
    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(29)).await;
    assert!(start.elapsed() < Duration::from_secs(25));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        stream.pending_for("order-service", "pod-t"),
        1,
        "left for redelivery"
    );
    assert!(stream.dead_letters().is_empty());
    drop(proxy);
    // The next pod under the same name finishes it.
    let running = Running::start(args(&stream, "pod-t"), pool.clone());
    wait_rows(&pool, 1, WAIT).await;
    assert!(stored(&pool, id).await.is_some());
    running.stop().await;
}

/// SIGTERM while the read is parked in a long BLOCK: the read is woken (CLIENT UNBLOCK), not
/// waited out, and the process exits promptly with nothing pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_parked_in_a_long_block_exits_promptly() {
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let mut cmd = ingest(db.url(), &stream, "pod-idle");
    cmd.env("ORDER_BLOCK_MS", "60000");
    let mut child = spawn(cmd, &stream.key);
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;
    let (_, e) = synthetic_event(2);
    stream.publish_event(&e);
    wait_rows(&pool, 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    signal(&child, "TERM");
    let status = wait_exit(&mut child, WAIT).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(status.code(), Some(0));
    assert_eq!(stream.pending_for("order-service", "pod-idle"), 0);
}

/// `publish-sample` writes checkout-format events that the consumer ingests, all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_samples_are_all_ingested() {
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let running = Running::start(args(&stream, "c1"), pool.clone());
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;
    let mut cmd = ingest(db.url(), &stream, "publisher");
    cmd.args(["publish-sample", "--count", "120"]);
    let out = run(cmd, WAIT).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_rows(&pool, 120, WAIT).await;
    assert!(stream.dead_letters().is_empty());
    assert_eq!(running.get(|m| &m.inserted), 120);
    running.stop().await;
}

/// `order_ingest_events_{inserted,duplicate}_total` of the process serving metrics on `port`.
async fn inserted_and_duplicates(port: u16) -> (u64, u64) {
    let (_, body) = http_get(port, "/metrics").await.expect("metrics answer");
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in {body}"))
    };
    (
        value("order_ingest_events_inserted_total "),
        value("order_ingest_events_duplicate_total "),
    )
}

/// First start on a stream that already holds orders and has no group: the group is created at
/// `0`, so three pods started at once store the earlier orders and those arriving meanwhile,
/// each exactly once, and leave nothing pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_reads_the_stream_from_its_beginning() {
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let mut ids = HashSet::new();
    for _ in 0..40 {
        let (id, e) = synthetic_event(5);
        stream.publish_event(&e);
        ids.insert(id);
    }
    assert!(stream.groups().is_empty());
    let mut pods = Vec::new();
    for n in 1..=3 {
        let port = spare_port();
        let mut cmd = ingest(db.url(), &stream, &format!("first-{n}"));
        cmd.env("ORDER_INGEST_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDER_BATCH_SIZE", "7");
        pods.push((spawn(cmd, &format!("{}-{n}", stream.key)), port));
    }
    for _ in 0..40 {
        let (id, e) = synthetic_event(5);
        stream.publish_event(&e);
        ids.insert(id);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_rows(&pool, 80, WAIT).await;
    wait_until(WAIT, "nothing pending", || async {
        stream.pending("order-service") == 0
    })
    .await;
    let (mut inserted, mut duplicates) = (0, 0);
    for (_, port) in &pods {
        let (i, d) = inserted_and_duplicates(*port).await;
        inserted += i;
        duplicates += d;
    }
    assert_eq!((inserted, duplicates), (80, 0), "every order stored once");
    for (child, _) in &mut pods {
        signal(child, "TERM");
        assert_eq!(wait_exit(child, WAIT).await.code(), Some(0));
    }
    for id in ids {
        assert!(stored(&pool, id).await.is_some(), "{id}");
    }
    assert_eq!(stream.groups(), vec!["order-service".to_owned()]);
    assert_eq!(stream.pending("order-service"), 0);
    assert!(stream.dead_letters().is_empty());
}

/// `--group-start '$'`: a new group starts at the stream's end, so the orders already in the
/// stream are skipped; an existing group is never moved by a later start; a bad value is one
/// line and a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_start_dollar_skips_the_earlier_orders() {
    let (db, pool) = database().await;
    let stream = TestStream::new();
    let mut earlier = Vec::new();
    for _ in 0..10 {
        let (id, e) = synthetic_event(6);
        stream.publish_event(&e);
        earlier.push(id);
    }
    let mut cmd = ingest(db.url(), &stream, "late-1");
    cmd.args(["--group-start", "$"]);
    let mut child = spawn(cmd, &stream.key);
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;
    let (later, e) = synthetic_event(6);
    stream.publish_event(&e);
    wait_rows(&pool, 1, WAIT).await;
    assert!(stored(&pool, later).await.is_some());
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, WAIT).await.code(), Some(0));

    // The group exists now: a start with the default (`0`) leaves it where it is.
    let mut child = spawn(ingest(db.url(), &stream, "late-2"), &stream.key);
    let (last, e) = synthetic_event(6);
    stream.publish_event(&e);
    wait_rows(&pool, 2, WAIT).await;
    assert!(stored(&pool, last).await.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, WAIT).await.code(), Some(0));
    assert_eq!(row_count(&pool).await, 2);
    for id in earlier {
        assert!(
            stored(&pool, id).await.is_none(),
            "{id} was before the group"
        );
    }
    assert_eq!(stream.pending("order-service"), 0);

    let mut cmd = ingest(db.url(), &stream, "bad");
    cmd.env("ORDER_GROUP_START", "latest");
    let out = run(cmd, WAIT).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("ORDER_GROUP_START") || stderr.contains("group start"),
        "{stderr}"
    );
}

//! The real `order-ingest` binary against a Redis Cluster (3 masters, 3 replicas) of each
//! test's own: workers seeded with a master that does not serve the stream's slot, dead
//! letters, redrive, replay, samples, pipelined XADDs through `RedisConn`, `--redis-mode`
//! against the wrong kind of server, the stream's master SIGKILLed mid-drain, and `rediss://`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::RedisCluster;
use common::*;
use order_ingest::stream::RedisConn;
use order_ingest::StreamArgs;
use order_test_support::tls::{refusal, Pki};
use redis::Commands;

const WAIT: Duration = Duration::from_secs(60);
/// The stream's real name: each test has a cluster of its own. Slot 13665.
const KEY: &str = "orders:completed";

/// A running binary, killed when dropped (so a failing test leaves no worker behind).
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command, name: &str) -> Worker {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Worker(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap())
}

fn log_of(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

async fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("order-ingest finished in time")
    .unwrap()
    .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Workers (and every other run of the binary) reach the cluster through `url`.
fn worker(db_url: &str, stream: &TestStream, url: &str, name: &str, port: u16) -> Command {
    let mut cmd = ingest(db_url, stream, name);
    cmd.env("REDIS_URL", url)
        .env("ORDER_BATCH_SIZE", "100")
        .env("ORDER_CLAIM_IDLE_MS", "2000")
        .env("ORDER_INGEST_METRICS_ADDR", format!("127.0.0.1:{port}"));
    cmd
}

fn alive(workers: &mut [Worker]) {
    for worker in workers {
        assert!(worker.0.try_wait().unwrap().is_none(), "a worker exited");
    }
}

async fn stop(workers: Vec<Worker>) {
    for mut worker in workers {
        let _ = Command::new("kill")
            .args(["-TERM", &worker.0.id().to_string()])
            .status();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = worker.0.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < WAIT, "no exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status.code(), Some(0), "clean exit after SIGTERM");
    }
}

async fn ready(port: u16) -> bool {
    matches!(http_get(port, "/health/ready").await, Some((200, _)))
}

/// `n` orders, interleaved with a poison entry every 600 and an event of another type every
/// 150; returns how many poison entries were published.
fn publish_mix(stream: &TestStream, n: usize) -> usize {
    let mut conn = stream.conn();
    let mut poison = 0;
    for i in 0..n {
        let (_, event) = synthetic_event(1 + (i % 50) as i32);
        let v: serde_json::Value = serde_json::from_str(&event).unwrap();
        let _: String = conn
            .xadd(
                KEY,
                "*",
                &[
                    ("eventId", v["id"].as_str().unwrap()),
                    ("eventType", ORDER_TYPE),
                    ("payload", event.as_str()),
                ],
            )
            .unwrap();
        if i % 600 == 0 {
            let _: String = conn
                .xadd(
                    KEY,
                    "*",
                    &[
                        ("eventId", "poison"),
                        ("eventType", ORDER_TYPE),
                        ("payload", "{not json"),
                    ],
                )
                .unwrap();
            poison += 1;
        }
        if i % 150 == 0 {
            let other = order_test_support::fixtures::read("other-event-type.json");
            let _: String = conn
                .xadd(
                    KEY,
                    "*",
                    &[
                        ("eventId", "other"),
                        ("eventType", "x"),
                        ("payload", other.as_str()),
                    ],
                )
                .unwrap();
        }
    }
    poison
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_seeded_with_another_master_store_every_order_of_the_stream() {
    let cluster = RedisCluster::start();
    let (db, pool) = database().await;
    let url = cluster.url(cluster.other_master(KEY));
    let stream = TestStream::on_cluster(&url, KEY);
    let ports = [spare_port(), spare_port()];
    let mut workers: Vec<Worker> = ["pod-a", "pod-b"]
        .iter()
        .zip(ports)
        .map(|(name, port)| {
            spawn(
                worker(db.url(), &stream, &url, name, port),
                &format!("cluster-{name}"),
            )
        })
        .collect();
    wait_until(WAIT, "the group", || async { !stream.groups().is_empty() }).await;
    let poison = publish_mix(&stream, 3000);

    wait_rows(&pool, 3000, Duration::from_secs(180)).await;
    wait_until(WAIT, "nothing pending", || async {
        stream.pending("order-service") == 0
    })
    .await;
    assert_eq!(stream.dead_letters().len(), poison, "poison in the DLQ");
    assert!(stream
        .dead_letters()
        .iter()
        .all(|d| d["errorClass"] == "invalid_json"));
    alive(&mut workers);
    wait_until(WAIT, "ready", || ready(ports[0])).await;
    let (_, metrics) = http_get(ports[1], "/metrics").await.unwrap();
    assert!(
        metrics.contains("order_ingest_group_pending 0"),
        "{metrics}"
    );
    assert!(metrics.contains("order_ingest_redis_up 1"), "{metrics}");
    stop(workers).await;
    let log = log_of("cluster-pod-a");
    let modes: Vec<&str> = log.lines().filter(|l| l.contains("redis mode")).collect();
    assert_eq!(modes.len(), 1, "the mode chosen is logged once: {log}");
    assert!(modes[0].contains("cluster"), "{}", modes[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_redrive_replay_samples_and_modes_on_a_cluster() {
    let cluster = RedisCluster::start();
    let (db, pool) = database().await;
    let url = cluster.url(cluster.other_master(KEY));
    let stream = TestStream::on_cluster(&url, KEY);
    let binary = |args: &[&str]| {
        let mut cmd = ingest(db.url(), &stream, "operator");
        cmd.env("REDIS_URL", &url).args(args);
        cmd
    };

    // `--redis-mode` against the wrong kind of server: one line, non-zero exit.
    let mut forced = binary(&["dlq", "list"]);
    forced.env("REDIS_MODE", "standalone");
    let line = refusal("order-ingest", &run(forced).await);
    assert!(
        line.contains("contradicts") && line.contains("cluster node"),
        "{line}"
    );
    let mut forced = binary(&["dlq", "list"]);
    forced
        .env("REDIS_MODE", "cluster")
        .env("REDIS_URL", redis_url());
    let line = refusal("order-ingest", &run(forced).await);
    assert!(line.contains("not in cluster mode"), "{line}");

    // A dead letter whose order is valid (it failed on a state since fixed).
    let (order_id, good) = synthetic_event(8);
    let letter: String = stream
        .conn()
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
    let listed = run(binary(&["dlq", "list"])).await;
    assert!(
        text(&listed).contains(&letter) && text(&listed).contains("1 dead letter(s)"),
        "{}",
        text(&listed)
    );

    let mut args = StreamArgs::new(&url, KEY, "c1");
    args.block_ms = 200;
    let running = Running::start(args, pool.clone());
    wait_until(WAIT, "the group", || async { !stream.groups().is_empty() }).await;
    // An id that is not a stream id is reported like one that is not there.
    let refused = run(binary(&["dlq", "redrive", "--id", "not-an-id"])).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains(":dlq: not-an-id"),
        "{}",
        text(&refused)
    );
    let redriven = run(binary(&["dlq", "redrive", "--id", &letter])).await;
    assert_eq!(redriven.status.code(), Some(0), "{}", text(&redriven));
    assert!(stream.dead_letters().is_empty());
    wait_rows(&pool, 1, WAIT).await;
    assert!(stored(&pool, order_id).await.is_some());

    // Samples through two comma-separated seeds, one of them the stream's own master.
    let seeds = format!("{url},{}", cluster.url(cluster.master_of(KEY).unwrap()));
    let mut sample = binary(&["publish-sample", "--count", "60"]);
    sample.env("REDIS_URL", &seeds);
    let published = run(sample).await;
    assert!(published.status.success(), "{}", text(&published));
    wait_rows(&pool, 61, WAIT).await;
    assert_eq!(running.stop().await, order_ingest::Exit::Clean);
    assert_eq!(stream.pending("order-service"), 0);

    // --replay restores deleted orders.
    let deleted = std::process::Command::new("psql")
        .args([
            db.url(),
            "-qtAc",
            "DELETE FROM orders WHERE id IN (SELECT id FROM orders LIMIT 10)",
        ])
        .output()
        .unwrap();
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(row_count(&pool).await, 51);
    let replayed = run(binary(&["--replay"])).await;
    assert_eq!(replayed.status.code(), Some(0), "{}", text(&replayed));
    assert!(
        text(&replayed).contains("inserted=10 already_present=51"),
        "{}",
        text(&replayed)
    );
    assert_eq!(row_count(&pool).await, 61);

    // What the outbox relay does: pipelined XADDs (MAXLEN ~) to one key through RedisConn,
    // built from a plain URL of a node that does not serve the key.
    let client = order_ingest::tls::redis_client(&url).unwrap();
    let mut conn = RedisConn::new(client, Duration::from_secs(5));
    let mut pipe = redis::pipe();
    for i in 0..50 {
        pipe.cmd("XADD")
            .arg("orders:updated")
            .arg("MAXLEN")
            .arg("~")
            .arg(1_000_000)
            .arg("*")
            .arg("n")
            .arg(i)
            .ignore();
    }
    conn.pipe::<()>(&pipe).await.unwrap();
    let length: usize = stream.conn().xlen("orders:updated").unwrap();
    assert_eq!(length, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_master_killed_mid_drain_loses_nothing_and_no_worker_exits() {
    let cluster = RedisCluster::start();
    let (db, pool) = database().await;
    let owner = cluster.master_of(KEY).unwrap();
    let url = cluster.url(cluster.other_master(KEY));
    let stream = TestStream::on_cluster(&url, KEY);
    // The backlog first, so that the kill lands mid-drain.
    let poison = publish_mix(&stream, 5000);
    // Redis replicates asynchronously: what the master did not pass on, Redis never kept.
    cluster.replicated(KEY);
    let ports = [spare_port(), spare_port()];
    // pod-b names only the master about to die: it finds its way back through the nodes it
    // learnt from the cluster's slot map.
    let seeds = [url.clone(), cluster.url(owner)];
    let mut workers: Vec<Worker> = ["pod-a", "pod-b"]
        .iter()
        .zip(ports)
        .zip(&seeds)
        .map(|((name, port), seed)| {
            let mut cmd = worker(db.url(), &stream, seed, name, port);
            cmd.env("ORDER_BATCH_SIZE", "10");
            spawn(cmd, &format!("failover-{name}"))
        })
        .collect();
    wait_until(WAIT, "the drain under way", || async {
        row_count(&pool).await >= 300
    })
    .await;
    assert!(row_count(&pool).await < 5000, "killed mid-drain");
    cluster.kill(owner);
    let killed = Instant::now();
    // Readiness while no master serves the stream's slot.
    let (done, mut seen) = (
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        Vec::new(),
    );
    let watcher = {
        let done = done.clone();
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let status = http_get(ports[0], "/health/ready").await.map(|r| r.0);
                seen.push(status);
            }
            seen
        })
    };
    let promoted = tokio::task::block_in_place(|| cluster.wait_for_new_master(KEY, owner, WAIT));
    let promotion = killed.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.await.unwrap();
    assert!(
        seen.contains(&Some(503)),
        "not ready while no master serves the slot: {seen:?}"
    );
    // Workers follow the new topology within seconds of the promotion.
    let at_promotion = row_count(&pool).await;
    let followed = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "orders stored after the promotion",
        || async { row_count(&pool).await > at_promotion || at_promotion == 5000 },
    )
    .await;
    let resumed = followed.elapsed();

    wait_rows(&pool, 5000, Duration::from_secs(180)).await;
    wait_until(WAIT, "nothing pending", || async {
        stream.pending("order-service") == 0
    })
    .await;
    // A dead letter written just before the kill may be written again (never lost).
    assert!(stream.dead_letters().len() >= poison, "poison in the DLQ");
    alive(&mut workers);
    wait_until(Duration::from_secs(10), "ready again", || ready(ports[0])).await;
    wait_until(Duration::from_secs(10), "ready again", || ready(ports[1])).await;
    let (_, metrics) = http_get(ports[1], "/metrics").await.unwrap();
    assert!(
        !metrics.contains("order_ingest_events_inserted_total 0\n"),
        "pod-b stored orders"
    );
    eprintln!("promoted {promoted} after {promotion:?}; orders stored again {resumed:?} later");
    stop(workers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_to_a_tls_cluster_announcing_host_names() {
    let pki = Pki::new();
    let cluster = RedisCluster::start_tls(&pki, "localhost");
    let (db, pool) = database().await;
    let url = cluster.url(cluster.ports[0]);
    let stream = TestStream::on_cluster(&url, KEY);
    let port = spare_port();
    let mut cmd = worker(db.url(), &stream, &url, "tls", port);
    cmd.env("SSL_CERT_FILE", pki.ca());
    let mut workers = vec![spawn(cmd, "cluster-tls")];
    wait_until(WAIT, "ready", || ready(port)).await;
    let mut sample = ingest(db.url(), &stream, "publisher");
    sample
        .env("REDIS_URL", &url)
        .env("SSL_CERT_FILE", pki.ca())
        .args(["publish-sample", "--count", "40"]);
    let published = run(sample).await;
    assert!(published.status.success(), "{}", text(&published));
    wait_rows(&pool, 40, WAIT).await;
    alive(&mut workers);
    stop(workers).await;

    // A CA that signed nothing the nodes present: refused at start-up, one line.
    let mut wrong = ingest(db.url(), &stream, "wrong-ca");
    wrong
        .env("REDIS_URL", &url)
        .env("SSL_CERT_FILE", pki.other_ca())
        .args(["dlq", "list"]);
    let line = refusal("order-ingest", &run(wrong).await);
    assert!(line.contains("UnknownIssuer"), "{line}");
}

/// SIGTERM while the read is parked in a long BLOCK on the stream's master: the `CLIENT
/// UNBLOCK` reaches that node (the worker's `REDIS_URL` names another), so the process exits
/// promptly instead of waiting the BLOCK out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_parked_in_a_long_block_on_a_cluster_exits_promptly() {
    let cluster = RedisCluster::start();
    let (db, pool) = database().await;
    let url = cluster.url(cluster.other_master(KEY));
    let stream = TestStream::on_cluster(&url, KEY);
    let port = spare_port();
    let mut cmd = worker(db.url(), &stream, &url, "pod-idle", port);
    cmd.env("ORDER_BLOCK_MS", "60000");
    let mut pod = spawn(cmd, "cluster-idle");
    wait_until(WAIT, "ready", || ready(port)).await;
    publish_mix(&stream, 1);
    wait_rows(&pool, 1, WAIT).await;
    // Parked again in its 60 s read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &pod.0.id().to_string()])
        .status();
    let status = loop {
        if let Some(status) = pod.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < WAIT, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(0));
    assert_eq!(stream.pending("order-service"), 0);
}

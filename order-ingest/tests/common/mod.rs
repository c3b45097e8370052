//! Shared helpers of the integration tests: real Redis (a stream key per test), a real
//! PostgreSQL database per test, checkout's entry layout, a synthetic order generator, a TCP
//! proxy that can cut the database, and bounded waits.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc
)]

use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudevents::{EventBuilder, EventBuilderV10};
use order_ingest::{Consumer, Exit, Metrics, StreamArgs};
use order_store::orders::OrderFilter;
use order_store::Pool;
use order_test_support::db::TestDatabase;
use order_test_support::orders::order_json;
use redis::Commands;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub mod cluster;

pub const ORDER_TYPE: &str = "org.example.checkout.OrderCompleted";

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub use order_test_support::spare_port;

/// A stream key of this test's own, deleted (with its dead-letter stream) on drop.
pub struct TestStream {
    pub key: String,
    url: String,
    /// `url` names a node of a Redis Cluster (which the test throws away whole).
    cluster: bool,
}

impl TestStream {
    pub fn new() -> Self {
        Self::on(&redis_url())
    }

    pub fn on(url: &str) -> Self {
        Self {
            key: format!("test:{}:orders", Uuid::new_v4().simple()),
            url: url.to_owned(),
            cluster: false,
        }
    }

    /// `key` on the Redis Cluster that `url` names a node of.
    pub fn on_cluster(url: &str, key: &str) -> Self {
        Self {
            key: key.to_owned(),
            url: url.to_owned(),
            cluster: true,
        }
    }

    pub fn dlq(&self) -> String {
        format!("{}:dlq", self.key)
    }

    pub fn conn(&self) -> cluster::TestConn {
        if self.cluster {
            cluster::TestConn::cluster(&self.url)
        } else {
            cluster::TestConn::Single(
                redis::Client::open(self.url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap(),
            )
        }
    }

    /// `XADD <key> * eventId <id> eventType <type> payload <json>`, as checkout does.
    pub fn publish(&self, event_id: &str, event_type: &str, payload: &str) -> String {
        self.conn()
            .xadd(
                &self.key,
                "*",
                &[
                    ("eventId", event_id),
                    ("eventType", event_type),
                    ("payload", payload),
                ],
            )
            .unwrap()
    }

    /// Publishes a whole event (its `id` and `type` become the entry's fields).
    pub fn publish_event(&self, payload: &str) -> String {
        let v: Value = serde_json::from_str(payload).unwrap();
        self.publish(
            v["id"].as_str().unwrap_or("no-id"),
            v["type"].as_str().unwrap_or("no-type"),
            payload,
        )
    }

    /// The entry the publisher's library writes when it creates the stream.
    pub fn publish_init(&self) -> String {
        self.conn()
            .xadd(&self.key, "*", &[("init", "true")])
            .unwrap()
    }

    pub fn dead_letters(&self) -> Vec<std::collections::HashMap<String, String>> {
        let reply: redis::streams::StreamRangeReply = self.conn().xrange_all(self.dlq()).unwrap();
        reply
            .ids
            .into_iter()
            .map(|id| {
                id.map
                    .into_iter()
                    .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap()))
                    .collect()
            })
            .collect()
    }

    /// Entries pending in `group` (all consumers).
    pub fn pending(&self, group: &str) -> usize {
        let reply: redis::RedisResult<redis::streams::StreamPendingReply> =
            self.conn().xpending(&self.key, group);
        reply.map_or(0, |r| r.count())
    }

    /// Entries pending on one consumer of `group`.
    pub fn pending_for(&self, group: &str, consumer: &str) -> usize {
        let reply: redis::streams::StreamPendingCountReply = self
            .conn()
            .xpending_consumer_count(&self.key, group, "-", "+", 10_000, consumer)
            .unwrap();
        reply.ids.len()
    }

    pub fn groups(&self) -> Vec<String> {
        let reply: redis::RedisResult<redis::streams::StreamInfoGroupsReply> =
            self.conn().xinfo_groups(&self.key);
        reply
            .map(|r| r.groups.into_iter().map(|g| g.name).collect())
            .unwrap_or_default()
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        if self.cluster {
            return;
        }
        if let Ok(client) = redis::Client::open(self.url.as_str()) {
            if let Ok(mut conn) = client.get_connection() {
                let _: redis::RedisResult<()> = conn.del(&[&self.key, &self.dlq()]);
            }
        }
    }
}

/// A valid OrderCompleted event for a new order (unique id and order number), built with
/// cloudevents-sdk so that the decoder is also checked against the SDK's serialisation.
pub fn synthetic_event(store: i32) -> (Uuid, String) {
    let order_id = Uuid::new_v4();
    let event = synthetic_event_for(order_id, &format!("ORD-T-{}", order_id.simple()), store);
    (order_id, event)
}

pub fn synthetic_event_for(order_id: Uuid, order_number: &str, store: i32) -> String {
    let order: Value = serde_json::from_str(&order_json(order_id, order_number, store)).unwrap();
    let event = EventBuilderV10::new()
        .id(Uuid::new_v4().to_string())
        .source("urn:reactive-platform:checkout-service")
        .ty(ORDER_TYPE)
        .subject(order_id.to_string())
        .time(chrono::Utc::now())
        .data(
            "application/json",
            json!({"checkoutSessionId": format!("cs-{}", order_id.simple()), "order": order}),
        )
        .build()
        .unwrap();
    serde_json::to_string(&event).unwrap()
}

/// The same event with a new CloudEvent id (a republished order).
pub fn with_new_event_id(payload: &str) -> String {
    let mut v: Value = serde_json::from_str(payload).unwrap();
    v["id"] = Uuid::new_v4().to_string().into();
    serde_json::to_string(&v).unwrap()
}

pub fn args(stream: &TestStream, consumer: &str) -> StreamArgs {
    let mut args = StreamArgs::new(&redis_url(), &stream.key, consumer);
    args.block_ms = 200;
    args
}

/// A consumer running in this process.
pub struct Running {
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<Exit>,
}

impl Running {
    pub fn start(args: StreamArgs, pool: Pool) -> Self {
        let metrics = Arc::new(Metrics::default());
        let (stop, stop_rx) = watch::channel(false);
        let consumer = Consumer::new(args, pool, metrics.clone(), stop_rx).unwrap();
        let handle = tokio::spawn(consumer.run());
        Self {
            metrics,
            stop,
            handle,
        }
    }

    pub async fn stop(self) -> Exit {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("consumer stops within 30 s")
            .unwrap()
    }

    pub fn get(&self, counter: fn(&Metrics) -> &prometheus::IntCounter) -> u64 {
        counter(&self.metrics).get()
    }
}

pub async fn row_count(pool: &Pool) -> i64 {
    let mut conn = pool.get().await.unwrap();
    order_store::orders::count(&mut conn, &OrderFilter::default())
        .await
        .unwrap()
}

pub async fn stored(pool: &Pool, id: Uuid) -> Option<order_store::Order> {
    let conn = pool.get().await.unwrap();
    order_store::orders::find_by_id(&conn, id).await.unwrap()
}

/// Waits until `check` holds, failing the test after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_rows(pool: &Pool, n: i64, limit: Duration) {
    wait_until(limit, &format!("{n} rows"), || async {
        row_count(pool).await >= n
    })
    .await;
    assert_eq!(row_count(pool).await, n, "exactly {n} rows");
}

/// A TCP proxy in front of a server that the test can cut (every connection closed, new
/// ones refused) and restore, or blackhole (the open connections go silent without being
/// closed, as after a NAT or failover drop, while new connections work), to take PostgreSQL or
/// Redis away from one process only.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: JoinHandle<()>,
}

/// Copies one direction until either side closes; once the proxy's epoch moves past `epoch`
/// it swallows everything and closes nothing.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    current: Arc<AtomicU64>,
    epoch: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if current.load(Ordering::SeqCst) != epoch {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if current.load(Ordering::SeqCst) != epoch {
        // Silent: keep the other side open.
        std::future::pending::<()>().await;
    }
}

impl Proxy {
    pub async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let epoch = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let target = target.to_owned();
        let (up2, epoch2, conns2) = (up.clone(), epoch.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let current = epoch2.clone();
                let task = tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let now = current.load(Ordering::SeqCst);
                    let (in_r, in_w) = inbound.into_split();
                    let (out_r, out_w) = outbound.into_split();
                    tokio::join!(
                        pump(in_r, out_w, current.clone(), now),
                        pump(out_r, in_w, current.clone(), now)
                    );
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            port,
            up,
            epoch,
            conns,
            accept,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Every open connection goes silent (nothing forwarded, nothing closed).
    pub fn blackhole(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// `url` (a postgres:// or redis:// URL on 127.0.0.1) pointed at this proxy.
    pub fn url_for(&self, url: &str, real_port: u16) -> String {
        url.replace(
            &format!("127.0.0.1:{real_port}"),
            &format!("127.0.0.1:{}", self.port),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

pub async fn database() -> (TestDatabase, Pool) {
    let db = TestDatabase::new().await;
    let pool = db.pool();
    (db, pool)
}

/// `GET path` over plain HTTP/1.0; returns (status, body).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .ok()?
    .ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The binary with a clean environment: only what the test sets.
pub fn ingest(db_url: &str, stream: &TestStream, consumer: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_order-ingest"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("DATABASE_URL", db_url)
        .env("REDIS_URL", redis_url())
        .env("ORDER_STREAM_KEY", &stream.key)
        .env("ORDER_CONSUMER_NAME", consumer)
        .env("ORDER_BLOCK_MS", "200")
        .env(
            "ORDER_INGEST_METRICS_ADDR",
            format!("127.0.0.1:{}", spare_port()),
        );
    cmd
}

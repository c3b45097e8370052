//! Support of the outbox tests: a Redis of the test's own (so it can be stopped), the real
//! order-api in-process, requests to it (over `order_test_support::http`), the updates stream as the tests read it, and the
//! relay in-process or as the real binary.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use order_ingest::config::OutboxArgs;
use order_ingest::config::Timeouts;
use order_ingest::outbox::Relay;
use order_ingest::stream::RedisConn;
use order_ingest::Metrics;
use order_store::orders::{self, InsertOutcome};
use order_store::{NewOrder, Pool};
use order_test_support::http::send;
use order_test_support::spare_port;
use order_test_support::tls::TempDir;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(60);
pub const BIN: &str = env!("CARGO_BIN_EXE_order-ingest");

/// A redis-server on a spare port with an append-only file (fsync on every write), so that
/// a restart keeps what was published.
pub struct PrivateRedis {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let mut redis = Self {
            dir: TempDir::new("order-outbox-redis"),
            port: spare_port(),
            child: None,
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: clients see the connection reset.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and waits until it answers.
    pub fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let started = Instant::now();
        while redis::Client::open(self.url().as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(started.elapsed() < WAIT, "private redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The updates stream `key`, oldest first.
    pub fn events(&self, key: &str) -> Vec<Event> {
        let mut conn = redis::Client::open(self.url().as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .unwrap();
        reply.ids.iter().map(Event::from_entry).collect()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One entry of the updates stream.
#[derive(Debug, Clone)]
pub struct Event {
    pub id_field: String,
    pub type_field: String,
    /// The `payload` field as published.
    pub payload: String,
    pub json: Value,
}

impl Event {
    fn from_entry(entry: &redis::streams::StreamId) -> Self {
        let field = |name: &str| -> String { entry.get(name).unwrap_or_default() };
        let payload = field("payload");
        Self {
            id_field: field("eventId"),
            type_field: field("eventType"),
            json: serde_json::from_str(&payload).unwrap(),
            payload,
        }
    }

    pub fn attr(&self, name: &str) -> &str {
        self.json[name].as_str().unwrap_or_default()
    }

    pub fn subject(&self) -> Uuid {
        self.attr("subject").parse().unwrap()
    }

    pub fn sequence(&self) -> u64 {
        self.attr("sequence").parse().unwrap()
    }

    pub fn data(&self) -> &Value {
        &self.json["data"]
    }
}

/// Waits until `key` holds at least `n` events; returns them.
pub async fn wait_events(redis: &PrivateRedis, key: &str, n: usize) -> Vec<Event> {
    let started = Instant::now();
    loop {
        let events = redis.events(key);
        if events.len() >= n {
            return events;
        }
        assert!(
            started.elapsed() < WAIT,
            "{} of {n} events on {key} after {WAIT:?}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real order-api, in-process, without tokens, on `database_url`.
pub struct Api {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Api {
    pub async fn start(database_url: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "order-api",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--auth-disabled",
            "--db-pool-size",
            "20",
        ];
        args.extend_from_slice(extra);
        let config = order_api::config::Config::try_parse_from(args).unwrap();
        let auth = order_api::auth::Auth::from_config(&config).await.unwrap();
        let pool = order_store::build_pool(&config.db, "order-api-outbox-test");
        let state = order_api::AppState::new(pool, auth, order_api::Limits::of(&config));
        let (tx, rx) = oneshot::channel::<()>();
        let (addr, server) = order_api::serve(&state, config.listen, async {
            let _ = rx.await;
        })
        .unwrap();
        Self {
            addr,
            shutdown: Some(tx),
            server: Some(tokio::spawn(server)),
        }
    }

    /// One request; the status and the body (JSON, or `null`).
    pub async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, text) = http(self.addr, method, path, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET /orders/{id}` as text, exactly as answered.
    pub async fn order_text(&self, id: Uuid) -> String {
        let (status, text) = http(self.addr, "GET", &format!("/orders/{id}"), None).await;
        assert_eq!(status, 200, "{text}");
        text
    }

    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        let body = json!({ "query": query, "variables": variables });
        let (status, reply) = self.send("POST", "/graphql", Some(&body)).await;
        assert_eq!(status, 200, "{reply}");
        reply
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(WAIT, server).await;
        }
    }
}

/// One request to the server at `addr`, a JSON body if any; the status and the body text.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let reply = send(
        method.parse().unwrap(),
        &format!("http://{addr}{path}"),
        None,
        body.map(|_| "application/json"),
        body.map(|b| b.to_string().into_bytes()),
        &[],
    )
    .await;
    (reply.status.as_u16(), reply.text)
}

/// Stores `orders` as ingest would.
pub async fn insert(pool: &Pool, orders: &[NewOrder]) {
    let mut conn = pool.get().await.unwrap();
    let outcomes = orders::insert_if_absent(&mut conn, orders).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == InsertOutcome::Inserted));
}

/// Rows still in the outbox.
pub async fn backlog(pool: &Pool) -> i64 {
    let mut conn = pool.get().await.unwrap();
    order_store::outbox::backlog(&mut conn).await.unwrap().rows
}

/// A stream key of the test's own.
pub fn updates_key() -> String {
    format!("test:{}:orders:updated", Uuid::new_v4().simple())
}

/// A relay of this process's own, for driving batches one at a time.
pub fn relay(pool: Pool, redis_url: &str, key: &str) -> Relay {
    let (_stop, stop_rx) = watch::channel(false);
    let client = redis::Client::open(redis_url).unwrap();
    Relay::new(
        &OutboxArgs::new(key),
        RedisConn::new(client, Duration::from_secs(2)),
        pool,
        Timeouts::default(),
        Arc::new(Metrics::default()),
        stop_rx,
    )
}

/// The relay running in this process.
pub struct RunningRelay {
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl RunningRelay {
    pub fn start(pool: Pool, redis_url: &str, key: &str) -> Self {
        let metrics = Arc::new(Metrics::default());
        let (stop, stop_rx) = watch::channel(false);
        let client = redis::Client::open(redis_url).unwrap();
        let relay = Relay::new(
            &OutboxArgs::new(key),
            RedisConn::new(client, Duration::from_secs(2)),
            pool,
            Timeouts::default(),
            metrics.clone(),
            stop_rx,
        );
        Self {
            metrics,
            stop,
            handle: tokio::spawn(relay.run()),
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("relay stops")
            .unwrap();
    }
}

/// The real binary consuming a stream of its own on `redis_url` and relaying to `key`.
pub fn ingest(db_url: &str, redis_url: &str, key: &str, metrics_port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("DATABASE_URL", db_url)
        .env("REDIS_URL", redis_url)
        .env(
            "ORDER_STREAM_KEY",
            format!("test:{}:orders", Uuid::new_v4().simple()),
        )
        .env("ORDER_CONSUMER_NAME", format!("pod-{metrics_port}"))
        .env("ORDER_BLOCK_MS", "200")
        .env("ORDER_UPDATES_STREAM_KEY", key)
        .env(
            "ORDER_INGEST_METRICS_ADDR",
            format!("127.0.0.1:{metrics_port}"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// A sample of `name` from the exposition at `port` (absent: `None`).
pub async fn metric(port: u16, name: &str) -> Option<f64> {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let connect = tokio::net::TcpStream::connect(addr).await;
    connect.ok()?;
    let (status, text) = http(addr, "GET", "/metrics", None).await;
    (status == 200).then_some(())?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `check` every 50 ms until it holds, for at most [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

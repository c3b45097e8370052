//! Database outage: a TCP proxy between the API and PostgreSQL that the test cuts and
//! restores (the shared PostgreSQL itself is never touched: other tests use it at the same time).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::common::{get, graphql, read_token, variant, TestApp};
use order_test_support::db::TestDatabase;

/// Forwards connections to `upstream` while up; when cut, drops every open connection and
/// closes new ones at once.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let up = up.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        return;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(task);
                }
            })
        };
        Self {
            addr,
            up,
            connections,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

fn upstream_of(url: &str) -> (SocketAddr, String) {
    // postgres://user@host:port/db
    let rest = url.split("://").nth(1).unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let (userinfo, hostport) = authority.rsplit_once('@').unwrap();
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    let host = hostport.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = host.parse().unwrap();
    (addr, format!("{userinfo}@{{}}/{path}"))
}

async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn database_outage_is_a_503_and_recovers() {
    let db = TestDatabase::new().await;
    let (upstream, template) = upstream_of(db.url());
    let proxy = Proxy::start(upstream).await;
    let proxied = format!(
        "postgres://{}",
        template.replace("{}", &proxy.addr.to_string())
    );
    let app = TestApp::start_with(
        db,
        &proxied,
        &[
            "--jwt-public-key-file",
            crate::common::keys().rsa_public_file.to_str().unwrap(),
        ],
    )
    .await;
    let order = variant("delivery", 8, Some("c-out"), chrono::Utc::now());
    let path = format!("/orders/{}", order.id);
    app.insert(&[order]).await;
    let token = read_token();
    assert_eq!(get(&app, "/health/ready", None).await.status, 200);
    assert_eq!(get(&app, &path, Some(&token)).await.status, 200);
    assert_actuator(&app, true).await;

    proxy.cut();
    let started = Instant::now();
    get(&app, "/health/ready", None)
        .await
        .error(503, "/health/ready");
    let body = get(&app, &path, Some(&token)).await.error(503, &path);
    assert_eq!(body["error"], "Service Unavailable");
    get(&app, "/orders/store/8", Some(&token))
        .await
        .error(503, "/orders/store/8");
    get(&app, "/orders?storeNumber=8", Some(&token))
        .await
        .error(503, "/orders");
    let reply = graphql(
        &app,
        Some(&token),
        "{ ordersByCustomer(customerId: \"c-out\") { id } }",
        json!({}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["errors"][0]["extensions"]["classification"],
        "INTERNAL_ERROR"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "outage answers came within the pool timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(get(&app, "/health/live", None).await.status, 200);
    assert_actuator(&app, false).await;

    proxy.restore();
    eventually(
        "readiness after recovery",
        Duration::from_secs(20),
        async || get(&app, "/health/ready", None).await.status == 200,
    )
    .await;
    eventually(
        "reads after recovery",
        Duration::from_secs(20),
        async || get(&app, &path, Some(&token)).await.status == 200,
    )
    .await;
    assert_actuator(&app, true).await;
    app.stop().await;
}

/// The Spring Boot Actuator paths the platform's health check, probes and scrape call:
/// no token, Actuator's shapes, health from the same check as `/health/ready`.
async fn assert_actuator(app: &TestApp, database_up: bool) {
    let (status, word) = if database_up {
        (200, "UP")
    } else {
        (503, "DOWN")
    };
    for path in ["/actuator/health", "/actuator/health/readiness"] {
        let reply = get(app, path, None).await;
        assert_eq!(reply.status.as_u16(), status, "{path}: {}", reply.text);
        assert_eq!(
            reply.headers.get("content-type").unwrap(),
            "application/json"
        );
        assert_eq!(reply.json(), json!({ "status": word }), "{path}");
    }
    let live = get(app, "/actuator/health/liveness", None).await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json(), json!({ "status": "UP" }));
    let info = get(app, "/actuator/info", None).await;
    assert_eq!(info.status, 200);
    assert!(info.json().is_object());
    let prometheus = get(app, "/actuator/prometheus", None).await;
    assert_eq!(prometheus.status, 200);
    assert!(prometheus
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    // The same numbers as /metrics: one exposition, two paths.
    assert!(prometheus
        .text
        .contains("# TYPE http_requests_total counter"));
    assert!(prometheus
        .text
        .contains("method=\"GET\",route=\"/actuator/health\""));
}

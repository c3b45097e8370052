//! The relay as it runs in production: the real `order-ingest` binary, several of them, one
//! SIGKILLed, one with the relay off, and behind PgBouncer in transaction mode.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use order_test_support::db::TestDatabase;
use order_test_support::orders::sample_order;
use order_test_support::spare_port;
use order_test_support::tls::PgBouncer;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{
    backlog, ingest, insert, metric, updates_key, wait_until, Api, Event, PrivateRedis,
};

/// A child process killed (SIGKILL) when dropped, with its metrics port.
struct Pod {
    child: Child,
    port: u16,
}

impl Pod {
    fn spawn(mut cmd: Command, port: u16) -> Self {
        Self {
            child: cmd.spawn().unwrap(),
            port,
        }
    }

    async fn wait_ready(&self) {
        let port = self.port;
        wait_until("ingest metrics", || async move {
            metric(port, "order_outbox_relay_active").await.is_some()
        })
        .await;
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pod(db_url: &str, redis: &PrivateRedis, key: &str, extra: &[(&str, &str)]) -> Pod {
    let port = spare_port();
    let mut cmd = ingest(db_url, &redis.url(), key, port);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Pod::spawn(cmd, port)
}

/// The §8 ordering and duplicate rules over a whole stream, given the number of changes that
/// were answered 2xx: every one published (distinct ids), duplicates identical to the first,
/// first occurrences per order in sequence order, each one's `previousStatus` the status of the
/// order in the one before. Returns the first occurrences per order.
fn check_stream(events: &[Event], committed: usize) -> HashMap<Uuid, Vec<&Event>> {
    let mut first: HashMap<&str, &Event> = HashMap::new();
    let mut per_order: HashMap<Uuid, Vec<&Event>> = HashMap::new();
    let mut duplicates = 0;
    for event in events {
        if let Some(seen) = first.get(event.attr("id")) {
            assert_eq!(seen.payload, event.payload, "a duplicate is identical");
            duplicates += 1;
            continue;
        }
        first.insert(event.attr("id"), event);
        per_order.entry(event.subject()).or_default().push(event);
    }
    assert_eq!(
        first.len(),
        committed,
        "every committed change, once ({duplicates} duplicates)"
    );
    for (order, events) in &per_order {
        for pair in events.windows(2) {
            assert!(
                pair[0].sequence() < pair[1].sequence(),
                "order {order}: {} published before {}",
                pair[0].sequence(),
                pair[1].sequence()
            );
            assert_eq!(
                pair[1].data()["previousStatus"],
                pair[0].data()["order"]["status"],
                "order {order}: previousStatus follows the change before"
            );
        }
    }
    per_order
}

/// One change of a mixed workload: mostly notes, every tenth a status step (which may be
/// refused when another step got there first).
fn change(order: Uuid, i: usize) -> (&'static str, String, Value) {
    const STEPS: [&str; 4] = ["PROCESSING", "SHIPPED", "DELIVERED", "REFUNDED"];
    if i % 10 == 3 {
        let to = STEPS[(i / 10) % STEPS.len()];
        (
            "PATCH",
            format!("/orders/{order}/status"),
            json!({ "status": to }),
        )
    } else {
        (
            "POST",
            format!("/orders/{order}/notes"),
            json!({ "note": format!("n{i}") }),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_one_killed_midway_publish_every_change_in_order() {
    let db = TestDatabase::new().await;
    let pool = db.pool();
    let redis = PrivateRedis::start();
    let key = updates_key();
    let orders: Vec<_> = (0..10).map(|i| sample_order(20 + i)).collect();
    insert(&pool, &orders).await;
    let mut pods = vec![
        pod(db.url(), &redis, &key, &[]),
        pod(db.url(), &redis, &key, &[]),
    ];
    for p in &pods {
        p.wait_ready().await;
    }
    let api = Arc::new(Api::start(db.url(), &[]).await);

    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let (api, done) = (api.clone(), done.clone());
            let (method, path, body) = change(orders[i % 10].id, i / 10);
            tokio::spawn(async move {
                let (status, reply) = api.send(method, &path, Some(&body)).await;
                done.fetch_add(1, Ordering::SeqCst);
                assert!(status == 200 || status == 400, "{path}: {status} {reply}");
                status == 200
            })
        })
        .collect();
    wait_until("half the changes", || {
        let done = done.clone();
        async move { done.load(Ordering::SeqCst) >= 200 }
    })
    .await;
    // Kill the relay that holds the role now (SIGKILL: no rollback from the process itself).
    let mut victim = 0;
    for (i, p) in pods.iter().enumerate() {
        if metric(p.port, "order_outbox_relay_active").await == Some(1.0) {
            victim = i;
        }
    }
    pods[victim].kill();
    let mut committed = 0;
    for task in tasks {
        committed += usize::from(task.await.unwrap());
    }
    assert!(committed >= 360, "every note commits: {committed}");
    pods[victim] = pod(db.url(), &redis, &key, &[]);
    pods[victim].wait_ready().await;

    wait_until("the outbox drains", || async { backlog(&pool).await == 0 }).await;
    for p in &pods {
        let port = p.port;
        wait_until("backlog metric 0", || async move {
            metric(port, "order_outbox_backlog").await == Some(0.0)
        })
        .await;
    }
    let events = redis.events(&key);
    let per_order = check_stream(&events, committed);
    assert_eq!(per_order.len(), 10);
    // The last event of each order shows the order as it is now.
    for order in &orders {
        let last = per_order[&order.id].last().unwrap();
        let now: Value = serde_json::from_str(&api.order_text(order.id).await).unwrap();
        assert_eq!(last.data()["order"], now);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_relay_off_nothing_is_published_until_a_relay_runs() {
    let db = TestDatabase::new().await;
    let pool = db.pool();
    let redis = PrivateRedis::start();
    let key = updates_key();
    let order = sample_order(30);
    insert(&pool, std::slice::from_ref(&order)).await;
    let off = pod(db.url(), &redis, &key, &[("ORDER_OUTBOX_RELAY", "false")]);
    off.wait_ready().await;
    let api = Api::start(db.url(), &[]).await;
    for i in 0..10 {
        let (status, _) = api
            .send(
                "POST",
                &format!("/orders/{}/notes", order.id),
                Some(&json!({"note": format!("n{i}")})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let port = off.port;
    wait_until("backlog metric 10", || async move {
        metric(port, "order_outbox_backlog").await == Some(10.0)
    })
    .await;
    assert!(
        metric(port, "order_outbox_oldest_age_seconds")
            .await
            .unwrap()
            >= 0.0
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        redis.events(&key).is_empty(),
        "relay off: nothing published"
    );
    assert_eq!(metric(port, "order_outbox_relay_active").await, Some(0.0));
    assert_eq!(
        metric(port, "order_outbox_published_total").await,
        Some(0.0)
    );

    let on = pod(db.url(), &redis, &key, &[]);
    on.wait_ready().await;
    for port in [off.port, on.port] {
        wait_until("backlog metric drains to 0", || async move {
            metric(port, "order_outbox_backlog").await == Some(0.0)
        })
        .await;
    }
    assert_eq!(
        metric(on.port, "order_outbox_published_total").await,
        Some(10.0)
    );
    assert_eq!(
        metric(on.port, "order_outbox_oldest_age_seconds").await,
        Some(0.0)
    );
    check_stream(&redis.events(&key), 10);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_path_and_relay_work_through_pgbouncer_transaction_mode() {
    let db = TestDatabase::new().await;
    let pool = db.pool();
    let redis = PrivateRedis::start();
    let key = updates_key();
    let orders: Vec<_> = (0..5).map(|i| sample_order(40 + i)).collect();
    insert(&pool, &orders).await;
    let bouncer = PgBouncer::start(db.name(), "transaction", 3);
    let url = bouncer.url(db.name());
    let relay = pod(&url, &redis, &key, &[("DB_PREPARED_STATEMENTS", "off")]);
    relay.wait_ready().await;
    let api = Arc::new(Api::start(&url, &["--db-prepared-statements", "off"]).await);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let api = api.clone();
            let (method, path, body) = change(orders[i % 5].id, i / 5);
            tokio::spawn(async move {
                let (status, reply) = api.send(method, &path, Some(&body)).await;
                assert!(status == 200 || status == 400, "{path}: {status} {reply}");
                status == 200
            })
        })
        .collect();
    let mut committed = 0;
    for task in tasks {
        committed += usize::from(task.await.unwrap());
    }
    assert!(committed >= 90, "{committed}");
    wait_until("the outbox drains", || async { backlog(&pool).await == 0 }).await;
    let events = redis.events(&key);
    let per_order = check_stream(&events, committed);
    let subjects: HashSet<Uuid> = per_order.keys().copied().collect();
    assert_eq!(subjects, orders.iter().map(|o| o.id).collect());
}

//! The transactional outbox end to end: changes made through the real order-api (REST and
//! GraphQL) become `OrderUpdated` CloudEvents on a Redis stream, published by the relay, with
//! the attributes, ordering and duplicate rules of docs/compatibility.md §8. Every test uses
//! its own database, its own Redis on a spare port (so it can be stopped) and its own keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

mod cluster;
#[path = "../common/cluster.rs"]
#[allow(dead_code)]
mod cluster_harness;
mod processes;
mod support;

use std::time::{Duration, Instant};

use order_test_support::db::TestDatabase;
use order_test_support::orders::sample_order;
use serde_json::{json, Value};
use support::{
    backlog, insert, updates_key, wait_events, wait_until, Api, Event, PrivateRedis, RunningRelay,
};
use uuid::Uuid;

/// Checks every attribute of `event` against the change it announces: `order` is the text of
/// `GET /orders/{id}` right after the change.
fn check_event(event: &Event, change: &str, previous: &str, order: &str) {
    let order: Value = serde_json::from_str(order).unwrap();
    let ce = &event.json;
    assert_eq!(ce["specversion"], "1.0");
    let id: Uuid = event.attr("id").parse().expect("id is a UUID");
    assert_eq!(event.id_field, id.to_string(), "eventId field = id");
    assert_eq!(ce["source"], "urn:reactive-platform:order-service");
    assert_eq!(ce["type"], "org.example.order.OrderUpdated");
    assert_eq!(event.type_field, "org.example.order.OrderUpdated");
    assert_eq!(ce["subject"], order["id"]);
    assert_eq!(ce["time"], order["updatedAt"], "time is the new updatedAt");
    assert!(event.attr("time").ends_with('Z'));
    assert_eq!(ce["datacontenttype"], "application/json");
    let sequence = event.attr("sequence");
    assert!(
        sequence.len() == 20 && sequence.bytes().all(|b| b.is_ascii_digit()),
        "{sequence}"
    );
    assert!(ce.get("traceparent").is_none(), "untraced request: none");
    let data = event.data();
    assert_eq!(data["change"], change);
    assert_eq!(data["previousStatus"], previous);
    // With arbitrary precision, numbers compare by their text: digit for digit.
    assert_eq!(data["order"], order, "data.order is GET /orders/{{id}}");
    assert_eq!(data.as_object().unwrap().len(), 3, "{data}");
}

struct Setup {
    db: TestDatabase,
    pool: order_store::Pool,
    redis: PrivateRedis,
    key: String,
    api: Api,
}

async fn setup() -> Setup {
    let db = TestDatabase::new().await;
    let pool = db.pool();
    let redis = PrivateRedis::start();
    let api = Api::start(db.url(), &[]).await;
    Setup {
        db,
        pool,
        redis,
        key: updates_key(),
        api,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_over_rest_and_graphql_publishes_exactly_one_complete_event() {
    let s = setup().await;
    let (rest_order, gql_order) = (sample_order(3), sample_order(4));
    insert(&s.pool, &[rest_order.clone(), gql_order.clone()]).await;
    let relay = RunningRelay::start(s.pool.clone(), &s.redis.url(), &s.key);

    let (a, b) = (rest_order.id, gql_order.id);
    let rest: [(&str, String, Value, &str, &str); 4] = [
        (
            "PATCH",
            format!("/orders/{a}/status"),
            json!({"status": "PROCESSING"}),
            "STATUS_CHANGED",
            "PAID",
        ),
        (
            "PATCH",
            format!("/orders/{a}/fulfillment"),
            json!({"pickupLocation": "Dock 4", "fulfillmentDate": "2026-12-24T10:00:00Z"}),
            "FULFILLMENT_UPDATED",
            "PROCESSING",
        ),
        (
            "POST",
            format!("/orders/{a}/notes"),
            json!({"note": "Ring twice"}),
            "NOTE_ADDED",
            "PROCESSING",
        ),
        (
            "POST",
            format!("/orders/{a}/cancel"),
            json!({"reason": "customer asked"}),
            "CANCELLED",
            "PROCESSING",
        ),
    ];
    let mut published = 0;
    for (method, path, body, change, previous) in rest {
        let (status, answer) = s.api.send(method, &path, Some(&body)).await;
        assert_eq!(status, 200, "{path}: {answer}");
        published += 1;
        let events = wait_events(&s.redis, &s.key, published).await;
        assert_eq!(events.len(), published, "exactly one event per change");
        let order = s.api.order_text(a).await;
        assert_eq!(answer, serde_json::from_str::<Value>(&order).unwrap());
        check_event(&events[published - 1], change, previous, &order);
    }

    let graphql: [(&str, Value, &str, &str); 4] = [
        ("mutation($id: ID!) { updateOrderStatus(id: $id, status: PROCESSING) { id } }", json!({"id": b}), "STATUS_CHANGED", "PAID"),
        ("mutation($id: ID!) { updateFulfillment(id: $id, input: {instructions: \"Back door\"}) { id } }", json!({"id": b}), "FULFILLMENT_UPDATED", "PROCESSING"),
        ("mutation($id: ID!) { addOrderNote(id: $id, note: \"Fragile\") { id } }", json!({"id": b}), "NOTE_ADDED", "PROCESSING"),
        ("mutation($id: ID!) { cancelOrder(id: $id, reason: \"out of stock\") { id } }", json!({"id": b}), "CANCELLED", "PROCESSING"),
    ];
    for (query, variables, change, previous) in graphql {
        let reply = s.api.graphql(query, variables).await;
        assert!(reply.get("errors").is_none(), "{reply}");
        published += 1;
        let events = wait_events(&s.redis, &s.key, published).await;
        assert_eq!(events.len(), published, "exactly one event per change");
        let order = s.api.order_text(b).await;
        check_event(&events[published - 1], change, previous, &order);
    }

    // Per order, sequences increase in commit order; ids are all different.
    let events = s.redis.events(&s.key);
    for subject in [a, b] {
        let sequences: Vec<u64> = events
            .iter()
            .filter(|e| e.subject() == subject)
            .map(Event::sequence)
            .collect();
        assert_eq!(sequences.len(), 4);
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    }
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.attr("id")).collect();
    assert_eq!(ids.len(), 8);
    assert_eq!(backlog(&s.pool).await, 0, "published rows are deleted");
    assert_eq!(relay.metrics.outbox.published.get(), 8);
    relay.stop().await;
    s.api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_changes_publish_nothing() {
    let s = setup().await;
    let order = sample_order(5);
    insert(&s.pool, std::slice::from_ref(&order)).await;
    let relay = RunningRelay::start(s.pool.clone(), &s.redis.url(), &s.key);
    let id = order.id;
    let unknown = Uuid::new_v4();
    let refused: Vec<(&str, String, Value)> = vec![
        (
            "PATCH",
            format!("/orders/{id}/status"),
            json!({"status": "DELIVERED"}),
        ),
        (
            "PATCH",
            format!("/orders/{id}/status"),
            json!({"status": "NOPE"}),
        ),
        (
            "PATCH",
            format!("/orders/{unknown}/status"),
            json!({"status": "PROCESSING"}),
        ),
        ("PATCH", format!("/orders/{id}/fulfillment"), json!({})),
        (
            "PATCH",
            format!("/orders/{unknown}/fulfillment"),
            json!({"instructions": "x"}),
        ),
        ("POST", format!("/orders/{id}/notes"), json!({"note": "  "})),
        (
            "POST",
            format!("/orders/{unknown}/notes"),
            json!({"note": "x"}),
        ),
        (
            "POST",
            format!("/orders/{id}/cancel"),
            json!({"reason": ""}),
        ),
        (
            "POST",
            "/orders/not-a-uuid/cancel".to_owned(),
            json!({"reason": "x"}),
        ),
    ];
    for (method, path, body) in &refused {
        let (status, answer) = s.api.send(method, path, Some(body)).await;
        assert!(
            (400..500).contains(&status),
            "{path} {body}: {status} {answer}"
        );
    }
    let reply = s
        .api
        .graphql(
            "mutation($id: ID!) { updateOrderStatus(id: $id, status: REFUNDED) { id } }",
            json!({"id": id}),
        )
        .await;
    assert!(reply.get("errors").is_some(), "{reply}");
    // Cancelled orders cannot be cancelled again: one real change, then a refused one.
    let (status, _) = s
        .api
        .send(
            "POST",
            &format!("/orders/{id}/cancel"),
            Some(&json!({"reason": "r1"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .api
        .send(
            "POST",
            &format!("/orders/{id}/cancel"),
            Some(&json!({"reason": "r2"})),
        )
        .await;
    assert!((400..500).contains(&status), "{status}");

    wait_until("the outbox drains", || async {
        backlog(&s.pool).await == 0
    })
    .await;
    // Give a stray event time to show up before counting.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let events = s.redis.events(&s.key);
    assert_eq!(events.len(), 1, "only the one real change: {events:?}");
    assert_eq!(events[0].data()["change"], "CANCELLED");
    relay.stop().await;
    s.api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_changes_answer_promptly_and_their_events_arrive_once_it_is_back() {
    let mut s = setup().await;
    let order = sample_order(6);
    insert(&s.pool, std::slice::from_ref(&order)).await;
    let relay = RunningRelay::start(s.pool.clone(), &s.redis.url(), &s.key);
    s.redis.stop();
    for i in 0..20 {
        let started = Instant::now();
        let (status, answer) = s
            .api
            .send(
                "POST",
                &format!("/orders/{}/notes", order.id),
                Some(&json!({"note": format!("note {i}")})),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered in {:?} with Redis down",
            started.elapsed()
        );
    }
    assert_eq!(backlog(&s.pool).await, 20, "held in the outbox");
    wait_until("a failed publish", || async {
        relay.metrics.outbox.publish_errors.get() > 0
    })
    .await;
    s.redis.resume();
    let events = wait_events(&s.redis, &s.key, 20).await;
    wait_until("the outbox drains", || async {
        backlog(&s.pool).await == 0
    })
    .await;
    let events = if events.len() == 20 {
        events
    } else {
        s.redis.events(&s.key)
    };
    assert_eq!(events.len(), 20);
    for (i, event) in events.iter().enumerate() {
        let instructions = event.data()["order"]["fulfillmentDetails"]["instructions"]
            .as_str()
            .unwrap();
        assert!(
            instructions.ends_with(&format!("note {i}")),
            "event {i} is note {i}: {instructions}"
        );
    }
    relay.stop().await;
    s.api.stop().await;
}

/// A row whose id was taken before another's but that commits after the other was published
/// (ids are taken at insert, not at commit) is still published: rows are deleted by their ids,
/// never "up to the highest".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_id_committing_after_a_higher_one_was_published_is_not_lost() {
    use order_store::{outbox, AsyncConnection as _, StoreError};
    let s = setup().await;
    let (early, late) = (sample_order(7), sample_order(8));
    insert(&s.pool, &[early.clone(), late.clone()]).await;
    let (inserted_tx, inserted_rx) = tokio::sync::oneshot::channel::<()>();
    let (commit_tx, commit_rx) = tokio::sync::oneshot::channel::<()>();
    let pool = s.pool.clone();
    let early_id = early.id;
    let slow = tokio::spawn(async move {
        let mut conn = pool.get_owned().await.unwrap();
        conn.transaction(async |conn| {
            let changed = order_store::orders::append_note(conn, early_id, "early").await?;
            outbox::record(conn, &changed, None).await?;
            inserted_tx.send(()).unwrap();
            commit_rx.await.unwrap();
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    });
    inserted_rx.await.unwrap();
    let (status, _) = s
        .api
        .send(
            "POST",
            &format!("/orders/{}/notes", late.id),
            Some(&json!({"note": "late"})),
        )
        .await;
    assert_eq!(status, 200);

    // Writes to Redis stall for a second: the relay reads its batch (the higher id only), then
    // waits in XADD while the lower id commits, so that the lower id is visible to the relay's
    // DELETE. A delete of "everything up to the highest id published" would drop it unpublished.
    let mut redis = redis::Client::open(s.redis.url().as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("WRITE")
        .query(&mut redis)
        .unwrap();
    let mut relay = support::relay(s.pool.clone(), &s.redis.url(), &s.key);
    let batch = tokio::spawn(async move {
        let step = relay.publish_batch().await.unwrap();
        (relay, step)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    commit_tx.send(()).unwrap();
    slow.await.unwrap();
    let (mut relay, step) = batch.await.unwrap();
    assert_eq!(
        step,
        order_ingest::outbox::Step::Published(1),
        "only the committed, higher id"
    );
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        order_ingest::outbox::Step::Published(1),
        "the lower id, committed since"
    );
    assert_eq!(backlog(&s.pool).await, 0);
    let events = s.redis.events(&s.key);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].subject(), late.id);
    assert_eq!(events[1].subject(), early.id);
    assert!(events[1].sequence() < events[0].sequence());
    s.api.stop().await;
}

/// A batch whose `XADD`s reached Redis but whose transaction then failed (its connection was
/// terminated before the delete) is published again: the duplicates carry the same `id` and
/// `sequence` and are byte-identical, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_published_but_not_committed_is_republished_identically() {
    let s = setup().await;
    let order = sample_order(9);
    insert(&s.pool, std::slice::from_ref(&order)).await;
    for i in 0..3 {
        let (status, _) = s
            .api
            .send(
                "POST",
                &format!("/orders/{}/notes", order.id),
                Some(&json!({"note": format!("n{i}")})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let mut redis = redis::Client::open(s.redis.url().as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("WRITE")
        .query(&mut redis)
        .unwrap();
    let mut relay = support::relay(s.pool.clone(), &s.redis.url(), &s.key);
    let batch = tokio::spawn(async move {
        let step = relay.publish_batch().await;
        (relay, step.is_ok())
    });
    // While the relay waits in XADD, its transaction is idle: end its connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = std::process::Command::new("psql")
        .args(["-X", "-qAt", "-d", s.db.url(), "-c"])
        .arg(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND state = 'idle in transaction'",
        )
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");
    let (mut relay, ok) = batch.await.unwrap();
    assert!(!ok, "the delete or commit failed");
    assert_eq!(s.redis.events(&s.key).len(), 3, "the XADDs went out");
    assert_eq!(backlog(&s.pool).await, 3, "the rows stay");

    let started = Instant::now();
    while !(relay.publish_batch().await.is_ok() && backlog(&s.pool).await == 0) {
        assert!(
            started.elapsed() < support::WAIT,
            "the batch is never republished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = s.redis.events(&s.key);
    assert_eq!(events.len(), 6);
    for (first, again) in events[..3].iter().zip(&events[3..]) {
        assert_eq!(first.payload, again.payload, "republished byte for byte");
        assert_eq!(first.id_field, again.id_field);
    }
    s.api.stop().await;
}

//! The consumer loop against real Redis and PostgreSQL, driven in-process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use order_ingest::Exit;
use order_store::models::{instant, money};
use order_store::BigDecimal;
use order_test_support::fixtures;
use redis::Commands;
use serde_json::Value;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Compares a stored order (as the service prints it) with checkout's JSON for it: money as
/// exact decimals printed with two decimals, instants as instants, everything else equal.
fn assert_same(path: &str, published: &Value, stored: &Value) {
    match (published, stored) {
        (Value::Object(p), Value::Object(s)) => {
            let pk: HashSet<_> = p.keys().collect();
            let sk: HashSet<_> = s.keys().collect();
            assert_eq!(pk, sk, "{path}: same fields");
            for (k, v) in p {
                assert_same(&format!("{path}.{k}"), v, &s[k]);
            }
        }
        (Value::Array(p), Value::Array(s)) => {
            assert_eq!(p.len(), s.len(), "{path}: same length");
            for (i, (p, s)) in p.iter().zip(s).enumerate() {
                assert_same(&format!("{path}[{i}]"), p, s);
            }
        }
        (Value::Number(p), Value::Number(s)) if is_money(path) => {
            let p: BigDecimal = money::parse(&p.to_string()).unwrap();
            let s_text = s.to_string();
            let s: BigDecimal = money::parse(&s_text).unwrap();
            assert_eq!(p, s, "{path}: same amount");
            assert_eq!(
                s_text.split_once('.').map(|(_, d)| d.len()),
                Some(2),
                "{path}: printed with two decimals ({s_text})"
            );
        }
        (Value::String(p), Value::String(s)) if instant::parse(p).is_ok() => {
            assert_eq!(instant::parse(p), instant::parse(s), "{path}: same instant");
        }
        (p, s) => assert_eq!(p, s, "{path}"),
    }
}

fn is_money(path: &str) -> bool {
    let field = path.rsplit('.').next().unwrap_or_default();
    [
        "subtotal",
        "discountTotal",
        "taxTotal",
        "fulfillmentCost",
        "grandTotal",
        "unitPrice",
        "discountAmount",
        "lineTotal",
        "appliedAmount",
    ]
    .contains(&field)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_lands_with_all_fields_equal_and_skips_are_acked() {
    let (_db, pool) = database().await;
    let stream = TestStream::new();
    let fixtures = [
        "order-completed-delivery.json",
        "order-completed-immediate-minimal.json",
        "order-completed-large-amount.json",
    ];
    stream.publish_init();
    // A group created at `$` (not the default `0`): this first entry is before it.
    let mut a = args(&stream, "c1");
    a.group_start = "$".to_owned();
    let running = Running::start(a, pool.clone());
    // Published after the group exists (it starts at `$`).
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;
    stream.publish_init();
    for name in fixtures {
        stream.publish_event(&fixtures::read(name));
    }
    stream.publish_event(&fixtures::read("other-event-type.json"));
    wait_rows(&pool, 3, WAIT).await;
    wait_until(WAIT, "everything acked", || async {
        stream.pending("order-service") == 0 && running.get(|m| &m.skipped) == 2
    })
    .await;

    for name in fixtures {
        let event: Value = serde_json::from_str(&fixtures::read(name)).unwrap();
        let published = &event["data"]["order"];
        let id: Uuid = published["id"].as_str().unwrap().parse().unwrap();
        let order = stored(&pool, id).await.expect("stored");
        let printed = serde_json::to_value(&order).unwrap();
        assert_same(name, published, &printed);
    }
    assert!(stream.dead_letters().is_empty(), "nothing dead-lettered");
    assert_eq!(running.get(|m| &m.inserted), 3);
    assert_eq!(running.stop().await, Exit::Clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_order_published_twice_gives_one_row() {
    let (_db, pool) = database().await;
    let stream = TestStream::new();
    let running = Running::start(args(&stream, "c1"), pool.clone());
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;
    let (id, event) = synthetic_event(5);
    let again = with_new_event_id(&event);
    assert_ne!(event, again);
    // Twice in one batch, and once more in a later one.
    stream.publish_event(&event);
    stream.publish_event(&again);
    wait_rows(&pool, 1, WAIT).await;
    stream.publish_event(&with_new_event_id(&event));
    wait_until(WAIT, "three events handled", || async {
        running.get(|m| &m.inserted) + running.get(|m| &m.duplicates) == 3
    })
    .await;
    assert_eq!(row_count(&pool).await, 1);
    assert!(stored(&pool, id).await.is_some());
    assert_eq!(running.get(|m| &m.inserted), 1);
    assert_eq!(running.get(|m| &m.duplicates), 2);
    assert!(stream.dead_letters().is_empty());
    assert_eq!(running.stop().await, Exit::Clean);
    assert_eq!(stream.pending("order-service"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dlq_verbatim_and_good_entries_of_the_batch_are_inserted() {
    let (_db, pool) = database().await;
    let stream = TestStream::new();
    // Create the group first, publish everything, then start: one batch holds it all.
    let _: () = stream
        .conn()
        .xgroup_create_mkstream(&stream.key, "order-service", "$")
        .unwrap();

    let (good1, good1_event) = synthetic_event(1);
    let good1_number = {
        let v: Value = serde_json::from_str(&good1_event).unwrap();
        v["data"]["order"]["orderNumber"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (good2, good2_event) = synthetic_event(2);
    // Odd optional attributes: a seconds-less time and no subject are still a valid order.
    let (odd, odd_event) = {
        let (id, e) = synthetic_event(3);
        let mut v: Value = serde_json::from_str(&e).unwrap();
        v["time"] = "2025-12-13T10:15Z".into();
        v.as_object_mut().unwrap().remove("subject");
        (id, serde_json::to_string(&v).unwrap())
    };
    let unknown_enum = {
        let mut v: Value = serde_json::from_str(&synthetic_event(4).1).unwrap();
        v["data"]["order"]["status"] = "TELEPORTED".into();
        serde_json::to_string(&v).unwrap()
    };
    let too_long = {
        let mut v: Value = serde_json::from_str(&synthetic_event(4).1).unwrap();
        v["data"]["order"]["orderNumber"] = "X".repeat(51).into();
        serde_json::to_string(&v).unwrap()
    };
    let conflict = synthetic_event_for(Uuid::new_v4(), &good1_number, 9);
    let missing_order = r#"{"specversion":"1.0","id":"e-missing","source":"s","type":"org.example.checkout.OrderCompleted","data":{"checkoutSessionId":"cs"}}"#;
    let not_cloudevent = r#"{"hello":"world"}"#;
    let not_json = "{\"specversion\":\"1.0\", oops";

    let mut expected: Vec<(String, &str, String)> = Vec::new(); // (streamId, class, payload)
    stream.publish_event(&good1_event);
    for (payload, class) in [
        (not_json.to_owned(), "invalid_json"),
        (not_cloudevent.to_owned(), "not_cloudevent"),
        (missing_order.to_owned(), "missing_order"),
        (unknown_enum, "invalid_order"),
        (too_long, "invalid_value"),
        (conflict, "order_number_conflict"),
    ] {
        let id = stream.publish(
            "poison-event",
            "org.example.checkout.OrderCompleted",
            &payload,
        );
        expected.push((id, class, payload));
    }
    stream.publish_event(&good2_event);
    stream.publish_event(&odd_event);

    let running = Running::start(args(&stream, "c1"), pool.clone());
    wait_rows(&pool, 3, WAIT).await;
    wait_until(WAIT, "dead letters", || async {
        stream.dead_letters().len() >= expected.len() && stream.pending("order-service") == 0
    })
    .await;
    for id in [good1, good2, odd] {
        assert!(stored(&pool, id).await.is_some(), "{id} stored");
    }
    let letters = stream.dead_letters();
    assert_eq!(letters.len(), expected.len());
    for (stream_id, class, payload) in &expected {
        let letter = letters
            .iter()
            .find(|l| &l["streamId"] == stream_id)
            .unwrap_or_else(|| panic!("dead letter for {stream_id}"));
        assert_eq!(&letter["errorClass"], class, "{stream_id}");
        assert_eq!(&letter["payload"], payload, "payload verbatim");
        assert_eq!(letter["eventId"], "poison-event");
        assert!(!letter["error"].is_empty());
        assert!(chrono::DateTime::parse_from_rfc3339(&letter["failedAt"]).is_ok());
    }
    assert_eq!(running.get(|m| &m.inserted), 3);
    assert_eq!(running.metrics.dead_lettered_total(), 6);
    assert_eq!(running.stop().await, Exit::Clean);
}

/// An order holding U+0000 in a text field (PostgreSQL cannot store it) alone in its batch
/// fails the same way on every retry, so retrying would stall the stream behind it: it is
/// dead-lettered as `invalid_value` and the next entry goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_with_a_nul_character_is_dead_lettered_and_does_not_stall_the_stream() {
    let (_db, pool) = database().await;
    let stream = TestStream::new();
    let _: () = stream
        .conn()
        .xgroup_create_mkstream(&stream.key, "order-service", "$")
        .unwrap();
    let running = Running::start(args(&stream, "c1"), pool.clone());
    let mut poison = Vec::new();
    for path in [
        &["data", "order", "customerId"][..],
        &["data", "order", "lineItems", "0", "name"][..],
    ] {
        let mut v: Value = serde_json::from_str(&synthetic_event(5).1).unwrap();
        let mut at = &mut v;
        for key in &path[..path.len() - 1] {
            at = match key.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*key],
            };
        }
        at[path[path.len() - 1]] = "bad\u{0}text".into();
        let payload = serde_json::to_string(&v).unwrap();
        // Published alone, so that it is a batch of its own.
        let id = stream.publish("nul-event", "org.example.checkout.OrderCompleted", &payload);
        wait_until(WAIT, "the NUL entry handled", || async {
            stream.pending("order-service") == 0 && stream.dead_letters().len() > poison.len()
        })
        .await;
        poison.push((id, payload));
    }
    let (good, good_event) = synthetic_event(6);
    stream.publish_event(&good_event);
    wait_rows(&pool, 1, WAIT).await;
    assert!(stored(&pool, good).await.is_some());
    let letters = stream.dead_letters();
    assert_eq!(letters.len(), poison.len());
    for (stream_id, payload) in &poison {
        let letter = letters
            .iter()
            .find(|l| &l["streamId"] == stream_id)
            .unwrap_or_else(|| panic!("dead letter for {stream_id}"));
        assert_eq!(letter["errorClass"], "invalid_value");
        assert!(letter["error"].contains("NUL"), "{}", letter["error"]);
        assert_eq!(&letter["payload"], payload, "payload verbatim");
    }
    assert_eq!(running.stop().await, Exit::Clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_mid_stream_dead_letters_nothing_and_recovers() {
    let (db, pool) = database().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let mut db_args = db.args();
    db_args.database_url = proxy.url_for(db.url(), 5432);
    db_args.db_connect_timeout_ms = 1000;
    let proxied = order_store::build_pool(&db_args, "order-ingest-test");
    let stream = TestStream::new();
    let mut a = args(&stream, "c1");
    a.batch_size = 4;
    let running = Running::start(a, proxied);
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;

    let mut ids = Vec::new();
    for _ in 0..5 {
        let (id, e) = synthetic_event(7);
        stream.publish_event(&e);
        ids.push(id);
    }
    wait_rows(&pool, 5, WAIT).await;

    proxy.cut();
    for _ in 0..10 {
        let (id, e) = synthetic_event(7);
        stream.publish_event(&e);
        ids.push(id);
    }
    wait_until(WAIT, "retries during the outage", || async {
        running.get(|m| &m.retried) >= 3
    })
    .await;
    assert!(running.metrics.is_degraded());
    assert!(
        stream.dead_letters().is_empty(),
        "no dead letters during the outage"
    );
    assert!(
        stream.pending("order-service") > 0,
        "the batch in flight is held, not acked"
    );
    assert_eq!(row_count(&pool).await, 5);

    proxy.restore();
    wait_rows(&pool, 15, WAIT).await;
    wait_until(WAIT, "all acked", || async {
        stream.pending("order-service") == 0
    })
    .await;
    for id in ids {
        assert!(stored(&pool, id).await.is_some());
    }
    assert!(stream.dead_letters().is_empty(), "still no dead letters");
    assert!(!running.metrics.is_degraded());
    assert_eq!(running.stop().await, Exit::Clean);
}

async fn workers_insert_every_order_exactly_once(workers: usize) {
    let (_db, pool) = database().await;
    let stream = TestStream::new();
    let _: () = stream
        .conn()
        .xgroup_create_mkstream(&stream.key, "order-service", "$")
        .unwrap();
    let mut running = Vec::new();
    for i in 0..workers {
        let mut a = args(&stream, &format!("worker-{i}"));
        a.batch_size = 7;
        running.push(Running::start(a, pool.clone()));
    }
    let n = 300;
    let mut ids = HashSet::new();
    for _ in 0..n {
        let (id, e) = synthetic_event(11);
        stream.publish_event(&e);
        ids.insert(id);
    }
    wait_rows(&pool, n, Duration::from_secs(60)).await;
    wait_until(WAIT, "all acked", || async {
        stream.pending("order-service") == 0
    })
    .await;
    let inserted: u64 = running.iter().map(|r| r.get(|m| &m.inserted)).sum();
    let duplicates: u64 = running.iter().map(|r| r.get(|m| &m.duplicates)).sum();
    let read: u64 = running.iter().map(|r| r.get(|m| &m.read)).sum();
    assert_eq!(inserted, n as u64, "each order inserted once");
    assert_eq!(duplicates, 0, "no order handled twice");
    assert_eq!(read, n as u64, "no entry delivered twice");
    assert!(
        running.iter().filter(|r| r.get(|m| &m.read) > 0).count() >= 2,
        "the work was shared"
    );
    for id in ids {
        assert!(stored(&pool, id).await.is_some());
    }
    for r in running {
        assert_eq!(r.stop().await, Exit::Clean);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_insert_every_order_exactly_once() {
    workers_insert_every_order_exactly_once(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_insert_every_order_exactly_once() {
    workers_insert_every_order_exactly_once(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_delivered_too_often_are_dead_lettered_with_their_count() {
    let (_db, pool) = database().await;
    let stream = TestStream::new();
    let mut conn = stream.conn();
    let _: () = conn
        .xgroup_create_mkstream(&stream.key, "order-service", "$")
        .unwrap();
    let (crashing, crashing_event) = synthetic_event(3);
    let (fine, fine_event) = synthetic_event(3);
    let crashing_id = stream.publish_event(&crashing_event);
    let fine_id = stream.publish_event(&fine_event);
    // A consumer that died with both, the first one already delivered 9 times.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("order-service")
        .arg("ghost")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream.key)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&stream.key)
        .arg("order-service")
        .arg("ghost")
        .arg(0)
        .arg(&crashing_id)
        .arg("RETRYCOUNT")
        .arg(9)
        .query(&mut conn)
        .unwrap();

    let mut a = args(&stream, "c1");
    a.claim_idle_ms = 200;
    let running = Running::start(a, pool.clone());
    wait_rows(&pool, 1, WAIT).await;
    wait_until(WAIT, "dead letter", || async {
        stream.dead_letters().len() == 1 && stream.pending("order-service") == 0
    })
    .await;
    let letter = &stream.dead_letters()[0];
    assert_eq!(letter["errorClass"], "max_deliveries_exceeded");
    assert_eq!(letter["streamId"], crashing_id);
    assert_eq!(letter["deliveryCount"], "10");
    assert_eq!(letter["payload"], crashing_event);
    assert!(stored(&pool, fine).await.is_some());
    assert!(stored(&pool, crashing).await.is_none());
    assert_eq!(running.get(|m| &m.claimed), 2);
    let _ = fine_id;
    assert_eq!(running.stop().await, Exit::Clean);
}

/// A private redis-server on a spare port, for faults that must not touch the shared one.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = spare_port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let url = format!("redis://127.0.0.1:{port}");
        wait_until(Duration::from_secs(10), "private redis", || {
            let url = url.clone();
            async move {
                redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection())
                    .is_ok()
            }
        })
        .await;
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The consumer's connections are killed while its read is parked in BLOCK (a reset that
/// leaves a blocking read unanswered would park the loop forever); it must notice, reconnect
/// and go on consuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_during_a_blocking_read_are_rebuilt() {
    let redis = PrivateRedis::start().await;
    let (_db, pool) = database().await;
    let stream = TestStream::on(&redis.url());
    let mut a = args(&stream, "c1");
    a.redis_url = redis.url();
    a.block_ms = 1000;
    let running = Running::start(a, pool.clone());
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;
    let (_, e) = synthetic_event(1);
    stream.publish_event(&e);
    wait_rows(&pool, 1, WAIT).await;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut stream.conn())
            .unwrap();
        let (_, e) = synthetic_event(1);
        stream.publish_event(&e);
        wait_rows(&pool, 2 + round, WAIT).await;
    }
    assert_eq!(running.stop().await, Exit::Clean);
    assert_eq!(stream.pending("order-service"), 0);
}

/// The Redis server restarts empty (no persistence, docs/compatibility.md §6.7): the group is gone;
/// the consumer recreates it and consumes what is published afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_stream_and_group_are_recreated() {
    let redis = PrivateRedis::start().await;
    let (_db, pool) = database().await;
    let stream = TestStream::on(&redis.url());
    let mut a = args(&stream, "c1");
    a.redis_url = redis.url();
    let running = Running::start(a, pool.clone());
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;
    let _: () = stream.conn().del(&stream.key).unwrap();
    let (_, e) = synthetic_event(1);
    wait_until(WAIT, "group recreated", || async {
        !stream.groups().is_empty()
    })
    .await;
    stream.publish_event(&e);
    wait_rows(&pool, 1, WAIT).await;
    assert!(running.get(|m| &m.retried) >= 1);
    assert_eq!(running.stop().await, Exit::Clean);
}

/// An entry pending on this consumer but deleted from the stream (XDEL, MAXLEN trimming)
/// comes back from `XREADGROUP ... 0` without fields; it is acknowledged, not a stuck loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_pending_entries_deleted_from_the_stream_are_acknowledged() {
    let (_db, pool) = database().await;
    let stream = TestStream::new();
    let mut conn = stream.conn();
    let _: () = conn
        .xgroup_create_mkstream(&stream.key, "order-service", "$")
        .unwrap();
    let (_, gone) = synthetic_event(3);
    let (kept, kept_event) = synthetic_event(3);
    let gone_id = stream.publish_event(&gone);
    stream.publish_event(&kept_event);
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("order-service")
        .arg("c1")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream.key)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    let _: i64 = conn.xdel(&stream.key, &[&gone_id]).unwrap();
    assert_eq!(stream.pending_for("order-service", "c1"), 2);

    let running = Running::start(args(&stream, "c1"), pool.clone());
    wait_rows(&pool, 1, WAIT).await;
    wait_until(WAIT, "nothing pending", || async {
        stream.pending("order-service") == 0
    })
    .await;
    assert!(stored(&pool, kept).await.is_some());
    assert!(stream.dead_letters().is_empty());
    assert_eq!(running.get(|m| &m.skipped), 1);
    assert_eq!(running.stop().await, Exit::Clean);
}

/// A BLOCK longer than redis-rs's default 500 ms response timeout is not a failure (a client
/// timeout that cut the read off would recycle the connection and strand delivered entries):
/// idle reads time out on the server side and return nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_blocking_reads_longer_than_the_client_default_timeout_are_not_failures() {
    let (_db, pool) = database().await;
    let stream = TestStream::new();
    let mut a = args(&stream, "c1");
    a.block_ms = 1500;
    let running = Running::start(a, pool.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(running.get(|m| &m.retried), 0, "no read failed");
    let (_, e) = synthetic_event(3);
    stream.publish_event(&e);
    wait_rows(&pool, 1, WAIT).await;
    assert_eq!(running.stop().await, Exit::Clean);
}

/// The socket under a parked blocking read goes silent without being closed.
/// The read's client-side deadline (BLOCK + margin) must fire, the connection be rebuilt, and
/// consumption go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_socket_under_a_blocking_read_is_abandoned_after_the_deadline() {
    let (_db, pool) = database().await;
    let stream = TestStream::new();
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let mut a = args(&stream, "c1");
    a.redis_url = proxy.url_for(&redis_url(), 6379);
    a.block_ms = 500;
    let running = Running::start(a, pool.clone());
    wait_until(WAIT, "group", || async { !stream.groups().is_empty() }).await;
    let (_, e) = synthetic_event(1);
    stream.publish_event(&e);
    wait_rows(&pool, 1, WAIT).await;

    proxy.blackhole();
    let (_, e) = synthetic_event(1);
    stream.publish_event(&e);
    wait_rows(&pool, 2, WAIT).await;
    assert!(
        running.get(|m| &m.retried) >= 1,
        "the silent read was noticed"
    );
    assert!(stream.dead_letters().is_empty());
    assert_eq!(running.stop().await, Exit::Clean);
    assert_eq!(stream.pending("order-service"), 0);
}

/// After Redis reloads a group from the AOF its entries-read counter is off, and `XINFO
/// GROUPS` reports a lag that never drains although the group has read every entry; passed on
/// as `order_ingest_group_lag`, it would fire the lag alert forever. `XGROUP SETID ... ENTRIESREAD 0` makes the same state here.
#[tokio::test]
async fn group_lag_is_zero_when_the_group_has_read_the_whole_stream() {
    use order_ingest::metrics::{Metrics, Probe};
    let (_db, pool) = database().await;
    let stream = TestStream::new();
    let _: () = stream
        .conn()
        .xgroup_create_mkstream(&stream.key, "order-service", "0")
        .unwrap();
    for _ in 0..3 {
        stream.publish_event(&synthetic_event(7).1);
    }
    let mut conn = stream.conn();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("order-service")
        .arg("c1")
        .arg("STREAMS")
        .arg(&stream.key)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    let probe = Probe {
        metrics: std::sync::Arc::new(Metrics::default()),
        pool,
        redis: tokio::sync::Mutex::new(order_ingest::stream::RedisConn::new(
            redis::Client::open(redis_url()).unwrap(),
            Duration::from_secs(5),
        )),
        stream_key: stream.key.clone(),
        group: "order-service".into(),
    };
    let state = probe.group_state().await.unwrap().unwrap();
    assert_eq!((state.pending, state.lag), (3, Some(0)));
    // The counter Redis derives `lag` from, knocked off as an AOF reload does.
    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(&stream.key)
        .arg("order-service")
        .arg("$")
        .arg("ENTRIESREAD")
        .arg(0)
        .query(&mut conn)
        .unwrap();
    let reported: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream.key)
        .query(&mut conn)
        .unwrap();
    assert_eq!(reported.groups[0].lag, Some(3), "Redis reports a stale lag");
    let state = probe.group_state().await.unwrap().unwrap();
    assert_eq!(state.lag, Some(0), "everything was read");
    // A real backlog is still reported.
    stream.publish_event(&synthetic_event(7).1);
    let state = probe.group_state().await.unwrap().unwrap();
    assert!(state.lag.is_some_and(|l| l > 0), "{state:?}");
}

/// `order_ingest_redis_errors_total{command}`: every failed command is counted under its name
/// (error replies such as NOGROUP, a pipeline under its first command, an unreachable server), except
/// `BUSYGROUP`, `XGROUP CREATE`'s normal answer when the group exists; the scrape reports the
/// count, `order_ingest_redis_up 0` when Redis did not answer, and no group series then.
#[tokio::test]
async fn redis_command_failures_are_counted_by_command() {
    use order_ingest::metrics::Metrics;
    use order_ingest::stream::RedisConn;
    let (_db, pool) = database().await;
    let stream = TestStream::new();
    let metrics = Metrics::default();
    let errors = metrics.redis_errors();
    let mut conn = RedisConn::new(
        redis::Client::open(redis_url()).unwrap(),
        Duration::from_secs(5),
    )
    .count_errors(errors.clone());

    let create = redis::Cmd::xgroup_create_mkstream(&stream.key, "order-service", "0");
    conn.query::<()>(&create).await.unwrap();
    assert!(conn.query::<()>(&create).await.is_err(), "BUSYGROUP");
    assert_eq!(errors.get("XGROUP"), 0, "BUSYGROUP is not a failure");

    let read = redis::Cmd::xread_options(
        &[&stream.key],
        &[">"],
        &redis::streams::StreamReadOptions::default().group("no-such-group", "c1"),
    );
    let failure = conn.query::<redis::Value>(&read).await.unwrap_err();
    assert!(failure.is_no_group(), "{failure}");
    assert_eq!(errors.get("XREADGROUP"), 1);

    // An XADD with an id below the stream's: an error reply inside a pipeline.
    let mut pipe = redis::pipe();
    pipe.cmd("XADD")
        .arg(&stream.key)
        .arg("0-0")
        .arg("f")
        .arg("v")
        .cmd("XLEN")
        .arg(&stream.key);
    assert!(conn.pipe::<redis::Value>(&pipe).await.is_err());
    assert_eq!(errors.get("XADD"), 1);
    assert_eq!(errors.get("XLEN"), 0);

    // Nobody listens: the connection fails, and the command it was for is counted.
    let mut unreachable = RedisConn::new(
        redis::Client::open(format!("redis://127.0.0.1:{}", spare_port())).unwrap(),
        Duration::from_secs(2),
    )
    .count_errors(errors.clone());
    let groups = redis::Cmd::xinfo_groups(&stream.key);
    assert!(unreachable
        .query::<redis::streams::StreamInfoGroupsReply>(&groups)
        .await
        .is_err());
    assert_eq!(errors.get("XINFO"), 1);
    // Without a counter nothing is counted.
    let mut uncounted = RedisConn::new(
        redis::Client::open(format!("redis://127.0.0.1:{}", spare_port())).unwrap(),
        Duration::from_secs(2),
    );
    assert!(uncounted
        .query::<redis::streams::StreamInfoGroupsReply>(&groups)
        .await
        .is_err());
    assert_eq!(errors.get("XINFO"), 1);

    let text = metrics.render(Err(()), None, &pool);
    for line in [
        "# TYPE order_ingest_redis_errors_total counter",
        r#"order_ingest_redis_errors_total{command="XREADGROUP"} 1"#,
        r#"order_ingest_redis_errors_total{command="XADD"} 1"#,
        r#"order_ingest_redis_errors_total{command="XINFO"} 1"#,
        r#"order_ingest_redis_errors_total{command="XGROUP"} 0"#,
        r#"order_ingest_redis_errors_total{command="XACK"} 0"#,
        "order_ingest_redis_up 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert!(!text.contains("order_ingest_group_"), "{text}");
    let text = metrics.render(
        Ok(Some(order_ingest::metrics::GroupState {
            pending: 2,
            lag: None,
        })),
        None,
        &pool,
    );
    assert!(
        text.lines().any(|l| l == "order_ingest_redis_up 1"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "order_ingest_group_pending 2"),
        "{text}"
    );
    assert!(!text.contains("order_ingest_group_lag"), "{text}");
}

//! The relay of the real binary publishing to a Redis Cluster: `orders:updated` (slot 5285)
//! lives on one master, and `REDIS_URL` names another; every change arrives once, in order.

use std::time::Instant;

use order_test_support::db::TestDatabase;
use order_test_support::orders::sample_order;
use order_test_support::tls::spare_port;
use redis::Commands as _;
use serde_json::{json, Value};

use crate::cluster_harness::{RedisCluster, TestConn};
use crate::support::{backlog, ingest, insert, Api, WAIT};

const KEY: &str = "orders:updated";

/// `(subject, sequence)` of every event on the stream, in stream order.
fn published(url: &str) -> Vec<(String, String)> {
    let reply: redis::streams::StreamRangeReply = TestConn::cluster(url).xrange_all(KEY).unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            let payload: String = redis::from_redis_value_ref(&entry.map["payload"]).unwrap();
            let event: Value = serde_json::from_str(&payload).unwrap();
            (
                event["subject"].as_str().unwrap().to_owned(),
                event["sequence"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_every_change_to_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let db = TestDatabase::new().await;
    let pool = db.pool();
    let api = Api::start(db.url(), &[]).await;
    let order = sample_order(6);
    insert(&pool, std::slice::from_ref(&order)).await;
    let url = cluster.url(cluster.other_master(KEY));
    let port = spare_port();
    let mut pod = ingest(db.url(), &url, KEY, port).spawn().unwrap();

    for i in 0..20 {
        let (status, answer) = api
            .send(
                "POST",
                &format!("/orders/{}/notes", order.id),
                Some(&json!({ "note": format!("n{i}") })),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let started = Instant::now();
    let events = loop {
        let events = published(&url);
        if events.len() >= 20 && backlog(&pool).await == 0 {
            break events;
        }
        assert!(pod.try_wait().unwrap().is_none(), "order-ingest exited");
        assert!(started.elapsed() < WAIT, "{} of 20 events", events.len());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(events.len(), 20, "each change once");
    assert!(events
        .iter()
        .all(|(subject, _)| *subject == order.id.to_string()));
    assert!(
        events.windows(2).all(|w| w[0].1 < w[1].1),
        "in commit order: {events:?}"
    );
    let _ = pod.kill();
    let _ = pod.wait();
    api.stop().await;
}

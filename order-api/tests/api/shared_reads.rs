//! Reads of one order share a few connections: many at once over a small pool, each answered
//! with its own order, and a shared connection the server closes is replaced.

use futures_util::future::join_all;
use order_test_support::db::TestDatabase;
use serde_json::json;

use crate::common::{get, graphql, keys, read_token, variant, TestApp};

async fn app_with_pool(size: &str) -> TestApp {
    let db = TestDatabase::new().await;
    let url = db.url().to_owned();
    TestApp::start_with(
        db,
        &url,
        &[
            "--jwt-public-key-file",
            keys().rsa_public_file.to_str().unwrap(),
            "--db-pool-size",
            size,
        ],
    )
    .await
}

/// The server's connections to this test's database.
const SERVER_CONNECTIONS: &str = "FROM pg_stat_activity \
    WHERE datname = current_database() AND application_name = 'order-api-test'";

#[tokio::test]
async fn concurrent_reads_each_get_their_own_order_over_a_small_pool() {
    let app = app_with_pool("4").await;
    let orders: Vec<_> = (0..40)
        .map(|i| {
            variant(
                "delivery",
                3,
                Some(&format!("c-shared-{i}")),
                chrono::Utc::now(),
            )
        })
        .collect();
    app.insert(&orders).await;
    let token = read_token();

    // 400 reads at once, REST and GraphQL, by id and by number, over a pool of 4.
    let reads = orders.iter().cycle().take(400).enumerate().map(|(i, order)| {
        let (app, token) = (&app, &token);
        async move {
            let body = match i % 4 {
                0 => get(app, &format!("/orders/{}", order.id), Some(token)).await,
                1 => {
                    let path = format!("/orders/number/{}", order.order_number);
                    get(app, &path, Some(token)).await
                }
                2 => {
                    let query = "query($id: ID!) { order(id: $id) { id orderNumber } }";
                    graphql(app, Some(token), query, json!({ "id": order.id })).await
                }
                _ => {
                    let query = "query($n: String!) { orderByNumber(orderNumber: $n) { id orderNumber } }";
                    graphql(app, Some(token), query, json!({ "n": order.order_number })).await
                }
            };
            assert_eq!(body.status, 200, "{}", body.text);
            let json = body.json();
            let found = if i % 4 < 2 {
                json
            } else {
                let data = &json["data"];
                data.get("order").unwrap_or(&data["orderByNumber"]).clone()
            };
            assert_eq!(found["id"], order.id.to_string(), "read {i}: {found}");
            assert_eq!(found["orderNumber"], order.order_number, "read {i}: {found}");
        }
    });
    join_all(reads).await;
    let connections: u32 = app
        .db
        .value(&format!("SELECT count(*) {SERVER_CONNECTIONS}"))
        .await
        .parse()
        .unwrap();
    assert!(connections <= 4, "{connections} connections");
    app.stop().await;
}

#[tokio::test]
async fn a_shared_connection_the_server_closes_is_replaced() {
    let app = app_with_pool("4").await;
    let order = variant("delivery", 5, Some("c-shared-kill"), chrono::Utc::now());
    let path = format!("/orders/{}", order.id);
    app.insert(&[order]).await;
    let token = read_token();
    for _ in 0..4 {
        assert_eq!(get(&app, &path, Some(&token)).await.status, 200);
    }

    let closed = app
        .db
        .value(&format!(
            "SELECT count(pg_terminate_backend(pid)) {SERVER_CONNECTIONS}"
        ))
        .await;
    assert_ne!(closed, "0");

    // Each shared connection fails the read that finds it closed (a 503, as any read on a
    // connection lost mid-way), then a fresh one takes its place.
    let mut failed = 0;
    for _ in 0..10 {
        let reply = get(&app, &path, Some(&token)).await;
        match reply.status.as_u16() {
            200 => {}
            503 => failed += 1,
            other => panic!("{other}: {}", reply.text),
        }
    }
    assert!(
        failed <= 2,
        "{failed} reads failed after the connections were closed"
    );
    for _ in 0..10 {
        assert_eq!(get(&app, &path, Some(&token)).await.status, 200);
    }
    app.stop().await;
}

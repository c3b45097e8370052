//! Reads on a streaming replica: a private primary and a `pg_basebackup -R` standby of it
//! (order_test_support::tls), never the shared server. Reads are served by the standby while it
//! is up and current, a change's X-Consistency-Token makes the next read see it, reads fall
//! back to the primary while the standby lags or is down, a document holding a mutation stays
//! on the primary, and the read URL honours TLS parameters and --db-prepared-statements (a
//! PgBouncer in transaction mode in front of the standby).
// The metrics compared are counters and 0/1 gauges: small integers, exact in an f64.
#![allow(clippy::float_cmp)]

use std::time::{Duration, Instant};

use order_store::orders::{self, InsertOutcome};
use order_test_support::tls::{PgBouncer, Pki, StreamingReplica, TlsPostgres};
use serde_json::json;

use crate::common::variant;
use crate::replica_client::{
    change_instructions, order_scans, scans_grow, Api, DATABASE, MAX_LAG_MS, ORDER_BY_ID,
    TOKEN_REPLAYED,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_and_a_client_sees_its_own_writes() {
    let pki = Pki::new();
    let primary = TlsPostgres::start(&pki);
    primary.psql("postgres", &format!("CREATE DATABASE {DATABASE}"));
    let primary_url = primary.url("localhost", DATABASE, "sslmode=disable");
    order_store::migrations::run_pending_locked(&primary_url)
        .await
        .unwrap();
    let orders: Vec<_> = (0..10)
        .map(|_| variant("delivery", 7, Some("c-replica"), chrono::Utc::now()))
        .collect();
    let ids: Vec<String> = orders.iter().map(|o| o.id.to_string()).collect();
    {
        let pool = order_store::build_pool(&order_store::DbArgs::for_url(&primary_url), "test");
        let mut conn = pool.get().await.unwrap();
        let outcomes = orders::insert_if_absent(&mut conn, &orders).await.unwrap();
        assert!(outcomes.iter().all(|o| *o == InsertOutcome::Inserted));
    }
    let replica = StreamingReplica::start(&primary);
    // The read URL takes libpq's TLS parameters, as the primary's does.
    let replica_url = replica.url(
        "localhost",
        DATABASE,
        &format!("sslmode=verify-full&sslrootcert={}", pki.ca().display()),
    );
    let api = Api::start(&primary_url, &replica_url, &[]).await;
    api.wait_for_metric("order_api_read_replica_up", |v| v == 1.0)
        .await;
    let primary_scans = || order_scans(|db, sql| primary.psql(db, sql));
    let replica_scans = || order_scans(|db, sql| replica.psql(db, sql));

    // 500 reads, REST and GraphQL, served by the replica.
    let (primary_before, replica_before) = (primary_scans(), replica_scans());
    for i in 0..250 {
        let id = &ids[i % ids.len()];
        assert_eq!(
            api.rest_instructions(id, None).await,
            json!("Leave at side door")
        );
        assert_eq!(
            api.graphql_instructions(id, None).await,
            json!("Leave at side door")
        );
    }
    let on_replica = scans_grow(replica_scans, replica_before, 500).await;
    let on_primary = primary_scans() - primary_before;
    assert!(on_primary < 10, "the primary served {on_primary} reads");
    assert!(on_replica < 510, "the replica counted {on_replica} scans");
    assert!(api.replica_reads().await >= 500.0);
    assert_eq!(
        replica.psql(
            "postgres",
            "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name LIKE 'order-api%'",
        ),
        "t\n",
        "the replica's connections use TLS"
    );

    // A malformed token is a 400 in the error format, over REST and GraphQL alike.
    let path = format!("/orders/{}", ids[0]);
    let reply = api.get(&path, Some("not-a-token")).await;
    let body = reply.error(400, &path);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("X-Consistency-Token"),
        "{body}"
    );
    let reply = api
        .graphql(
            &json!({ "query": ORDER_BY_ID, "variables": { "id": ids[0] } }),
            Some("12/zz"),
        )
        .await;
    reply.error(400, "/graphql");

    // Replay paused: a change's token makes the next read see it, over REST and GraphQL. (A
    // change replayed first gives the standby a last replay time to measure its lag from.)
    let reply = change_instructions(&api, &ids[9], "replayed").await;
    let token = reply.headers["x-consistency-token"].to_str().unwrap();
    let started = Instant::now();
    while api.rest_instructions(&ids[9], Some(token)).await != json!("replayed")
        || api.metric(TOKEN_REPLAYED).await == 0.0
    {
        assert!(started.elapsed() < Duration::from_secs(30), "not replayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replica.psql(DATABASE, "SELECT pg_wal_replay_pause()");
    let reply = change_instructions(&api, &ids[0], "rest change").await;
    let rest_token = reply.headers["x-consistency-token"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api.rest_instructions(&ids[0], Some(&rest_token)).await,
        json!("rest change")
    );
    assert_eq!(
        api.graphql_instructions(&ids[0], Some(&rest_token)).await,
        json!("rest change")
    );
    let mutation = json!({
        "query": "mutation($id: ID!) { updateFulfillment(id: $id, input: { instructions: \"graphql change\" }) { id } }",
        "variables": { "id": ids[1] },
    });
    let reply = api.graphql(&mutation, None).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
    assert!(reply.json().get("errors").is_none(), "{}", reply.text);
    let graphql_token = reply.headers["x-consistency-token"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api.graphql_instructions(&ids[1], Some(&graphql_token))
            .await,
        json!("graphql change")
    );
    assert_eq!(
        api.rest_instructions(&ids[1], Some(&graphql_token)).await,
        json!("graphql change")
    );
    // The replica itself has not seen the changes: the reads above came from the primary.
    assert_eq!(
        replica
            .psql(
                DATABASE,
                &format!(
                    "SELECT fulfillment_details->>'instructions' FROM orders WHERE id IN ('{}', '{}')",
                    ids[0], ids[1]
                ),
            )
            .lines()
            .filter(|l| l.contains("change"))
            .count(),
        0
    );

    // Still paused, and now past the maximum lag: reads without a token see the primary's data.
    api.wait_for_metric("order_api_read_replica_lag_seconds", |lag| {
        lag > MAX_LAG_MS as f64 / 1000.0
    })
    .await;
    assert_eq!(
        api.rest_instructions(&ids[0], None).await,
        json!("rest change")
    );
    assert_eq!(
        api.graphql_instructions(&ids[1], None).await,
        json!("graphql change")
    );
    assert!(
        api.metric("order_api_db_reads_total{reason=\"replica_lagging\",target=\"primary\"}")
            .await
            >= 2.0
    );

    // Replay resumed: a read with the token goes back to the replica once it has replayed it.
    replica.psql(DATABASE, "SELECT pg_wal_replay_resume()");
    api.wait_for_metric("order_api_read_replica_lag_seconds", |lag| lag == 0.0)
        .await;
    let before = api.metric(TOKEN_REPLAYED).await;
    assert_eq!(
        api.rest_instructions(&ids[0], Some(&rest_token)).await,
        json!("rest change")
    );
    assert_eq!(api.metric(TOKEN_REPLAYED).await, before + 1.0);

    // A document holding a mutation runs every operation on the primary, its query too.
    let document = json!({
        "query": format!("query Read {{ order(id: \"{}\") {{ id }} }} \
                          mutation Write {{ addOrderNote(id: \"{}\", note: \"n\") {{ id }} }}",
                         ids[2], ids[2]),
        "operationName": "Read",
    });
    let replica_reads = api.replica_reads().await;
    let primary_before = primary_scans();
    for _ in 0..20 {
        let reply = api.graphql(&document, None).await;
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
        assert_eq!(reply.json()["data"]["order"]["id"], json!(ids[2]));
    }
    let mut write = document.clone();
    write["operationName"] = json!("Write");
    let reply = api.graphql(&write, None).await;
    assert!(reply.json().get("errors").is_none(), "{}", reply.text);
    assert!(reply.headers.contains_key("x-consistency-token"));
    scans_grow(primary_scans, primary_before, 20).await;
    assert_eq!(api.replica_reads().await, replica_reads);
    assert_eq!(
        api.metric("order_api_db_reads_total{reason=\"mutation\",target=\"primary\"}")
            .await,
        20.0
    );

    // Replica stopped: reads keep answering 200 without waiting on it; readiness stays 200.
    replica.stop();
    let mut took = Vec::new();
    for i in 0..200 {
        let id = &ids[i % ids.len()];
        let started = Instant::now();
        if i % 2 == 0 {
            api.rest_instructions(id, None).await;
        } else {
            api.graphql_instructions(id, None).await;
        }
        took.push(started.elapsed());
    }
    took.sort();
    let p90 = took[took.len() * 9 / 10];
    assert!(p90 < Duration::from_millis(200), "p90 {p90:?}");
    assert_eq!(api.get("/health/ready", None).await.status.as_u16(), 200);
    assert_eq!(api.metric("order_api_read_replica_up").await, 0.0);

    // Replica back: reads return to it.
    replica.start_again();
    api.wait_for_metric("order_api_read_replica_up", |v| v == 1.0)
        .await;
    let replica_before = replica_scans();
    for i in 0..100 {
        api.rest_instructions(&ids[i % ids.len()], None).await;
    }
    // The pooled connections the restart cut fail once each (those reads are retried on the
    // primary); the rest are the replica's.
    scans_grow(replica_scans, replica_before, 80).await;

    // PgBouncer in transaction mode in front of the replica, --db-prepared-statements off:
    // the read pool honours it, so every read is served by the replica (none fails over; with
    // prepared statements on, most would fail there and be retried on the primary).
    let bouncer = PgBouncer::start_for(
        "127.0.0.1",
        &replica.port().to_string(),
        "postgres",
        DATABASE,
        "transaction",
        4,
    );
    let pooled = Api::start(
        &primary_url,
        &bouncer.url(DATABASE),
        &["--db-prepared-statements", "off"],
    )
    .await;
    pooled
        .wait_for_metric("order_api_read_replica_up", |v| v == 1.0)
        .await;
    let reads = futures_util::future::join_all((0..200).map(|i| {
        let (pooled, id) = (&pooled, &ids[i % ids.len()]);
        async move {
            if i % 2 == 0 {
                pooled.rest_instructions(id, None).await
            } else {
                pooled.graphql_instructions(id, None).await
            }
        }
    }))
    .await;
    assert_eq!(reads.len(), 200);
    assert_eq!(pooled.replica_reads().await, 200.0, "{}", bouncer.log());
    assert_eq!(
        pooled
            .metric("order_api_db_reads_total{reason=\"replica_failed\",target=\"primary\"}")
            .await,
        0.0
    );
}

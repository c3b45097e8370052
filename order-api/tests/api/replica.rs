//! Reads on a streaming replica: a private primary and a `pg_basebackup -R` standby of it
//! (order_store::test_tls), never the shared server. Reads are served by the standby while it
//! is up and current, a change's X-Consistency-Token makes the next read see it, reads fall
//! back to the primary while the standby lags or is down, and a document holding a mutation
//! stays on the primary.
// The metrics compared are counters and 0/1 gauges: small integers, exact in an f64.
#![allow(clippy::float_cmp)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser as _;
use hyper::Method;
use order_api::auth::Auth;
use order_api::config::Config;
use order_api::{AppState, Limits, ReadReplicaConfig};
use order_store::orders::{self, InsertOutcome};
use order_store::test_tls::{PgBouncer, Pki, StreamingReplica, TlsPostgres};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::common::{all_token, keys, read_token, send, variant, Reply, AUDIENCE};

const DATABASE: &str = "orderdb";
const MAX_LAG_MS: u64 = 1000;
const TOKEN_REPLAYED: &str =
    "order_api_db_reads_total{reason=\"token_replayed\",target=\"replica\"}";
const ORDER_BY_ID: &str =
    "query($id: ID!) { order(id: $id) { id fulfillmentDetails { instructions } } }";

struct Api {
    addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

impl Api {
    async fn start(primary_url: &str, replica_url: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "order-api",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            primary_url,
            "--read-database-url",
            replica_url,
            "--db-connect-timeout-ms",
            "2000",
            "--db-query-timeout-ms",
            "5000",
            "--jwt-issuers",
            crate::common::ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--jwt-public-key-file",
            keys().rsa_public_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let max_lag = MAX_LAG_MS.to_string();
        args.push("--read-max-lag-ms");
        args.push(&max_lag);
        let config = Config::try_parse_from(args).unwrap();
        let auth = Auth::from_config(&config).await.unwrap();
        let replica =
            ReadReplicaConfig::build(&config.read_db().unwrap(), config.read_max_lag()).unwrap();
        let state = AppState::with_read_replica(
            order_store::build_pool(&config.db, "order-api-test"),
            Some(replica),
            auth,
            Limits {
                max_body_bytes: config.max_body_bytes,
                pool_max: config.db.db_pool_size,
                db_op_timeout: config.db_query_timeout(),
            },
        );
        let (tx, rx) = oneshot::channel::<()>();
        let (addr, server) = order_api::serve(&state, config.listen, async {
            let _ = rx.await;
        })
        .unwrap();
        tokio::spawn(server);
        Self {
            addr,
            _shutdown: tx,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str, consistency: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> = consistency
            .map(|t| vec![("x-consistency-token", t)])
            .unwrap_or_default();
        send(
            Method::GET,
            &self.url(path),
            Some(&read_token()),
            None,
            None,
            &headers,
        )
        .await
    }

    async fn graphql(&self, body: &Value, consistency: Option<&str>) -> Reply {
        let mut headers = vec![];
        if let Some(t) = consistency {
            headers.push(("x-consistency-token", t));
        }
        send(
            Method::POST,
            &self.url("/graphql"),
            Some(&all_token()),
            Some("application/json"),
            Some(body.to_string().into_bytes()),
            &headers,
        )
        .await
    }

    /// `instructions` of the order, read over REST.
    async fn rest_instructions(&self, id: &str, consistency: Option<&str>) -> Value {
        let reply = self.get(&format!("/orders/{id}"), consistency).await;
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
        reply.json()["fulfillmentDetails"]["instructions"].clone()
    }

    /// `instructions` of the order, read over GraphQL.
    async fn graphql_instructions(&self, id: &str, consistency: Option<&str>) -> Value {
        let reply = self
            .graphql(
                &json!({ "query": ORDER_BY_ID, "variables": { "id": id } }),
                consistency,
            )
            .await;
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
        let body = reply.json();
        assert!(body.get("errors").is_none(), "{body}");
        body["data"]["order"]["fulfillmentDetails"]["instructions"].clone()
    }

    /// The value of one series of `/metrics` (0 when absent).
    async fn metric(&self, series: &str) -> f64 {
        let reply = send(Method::GET, &self.url("/metrics"), None, None, None, &[]).await;
        reply
            .text
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    async fn replica_reads(&self) -> f64 {
        self.metric("order_api_db_reads_total{reason=\"current\",target=\"replica\"}")
            .await
            + self.metric(TOKEN_REPLAYED).await
    }

    async fn wait_for_metric(&self, series: &str, wanted: impl Fn(f64) -> bool) {
        let started = Instant::now();
        loop {
            let value = self.metric(series).await;
            if wanted(value) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{series} stays at {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `PATCH /orders/{id}/fulfillment` with new `instructions`, answered 200.
async fn change_instructions(api: &Api, id: &str, instructions: &str) -> Reply {
    let reply = send(
        Method::PATCH,
        &api.url(&format!("/orders/{id}/fulfillment")),
        Some(&all_token()),
        Some("application/json"),
        Some(
            json!({ "instructions": instructions })
                .to_string()
                .into_bytes(),
        ),
        &[],
    )
    .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
    reply
}

/// Scans of `orders` a server has counted (its own statistics: a standby counts its reads).
fn order_scans(psql: impl Fn(&str, &str) -> String) -> i64 {
    psql(
        DATABASE,
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables \
         WHERE relname = 'orders'",
    )
    .trim()
    .parse()
    .unwrap()
}

/// Waits until `scans()` has grown by at least `at_least` over `before`; returns the growth.
/// Statistics reach the shared counters some seconds after the reads.
async fn scans_grow(scans: impl Fn() -> i64, before: i64, at_least: i64) -> i64 {
    let started = Instant::now();
    loop {
        let grown = scans() - before;
        if grown >= at_least {
            return grown;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {grown} scans counted, {at_least} expected"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

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

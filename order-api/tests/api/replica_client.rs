//! The replica test's client: order-api started in-process over a private primary and its
//! read replica, requests with and without a consistency token, `/metrics` values, and the
//! servers' own scan counters.
// The metrics compared are counters and 0/1 gauges: small integers, exact in an f64.
#![allow(clippy::float_cmp)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser as _;
use hyper::Method;
use order_api::auth::Auth;
use order_api::config::Config;
use order_api::{AppState, Limits, ReadReplicaConfig};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::common::{all_token, keys, read_token, send, Reply, AUDIENCE};

pub const DATABASE: &str = "orderdb";
pub const MAX_LAG_MS: u64 = 1000;
pub const TOKEN_REPLAYED: &str =
    "order_api_db_reads_total{reason=\"token_replayed\",target=\"replica\"}";
pub const ORDER_BY_ID: &str =
    "query($id: ID!) { order(id: $id) { id fulfillmentDetails { instructions } } }";

pub struct Api {
    pub addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

impl Api {
    pub async fn start(primary_url: &str, replica_url: &str, extra: &[&str]) -> Self {
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
            Limits::of(&config),
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str, consistency: Option<&str>) -> Reply {
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

    pub async fn graphql(&self, body: &Value, consistency: Option<&str>) -> Reply {
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
    pub async fn rest_instructions(&self, id: &str, consistency: Option<&str>) -> Value {
        let reply = self.get(&format!("/orders/{id}"), consistency).await;
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
        reply.json()["fulfillmentDetails"]["instructions"].clone()
    }

    /// `instructions` of the order, read over GraphQL.
    pub async fn graphql_instructions(&self, id: &str, consistency: Option<&str>) -> Value {
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
    pub async fn metric(&self, series: &str) -> f64 {
        let reply = send(Method::GET, &self.url("/metrics"), None, None, None, &[]).await;
        reply
            .text
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    pub async fn replica_reads(&self) -> f64 {
        self.metric("order_api_db_reads_total{reason=\"current\",target=\"replica\"}")
            .await
            + self.metric(TOKEN_REPLAYED).await
    }

    pub async fn wait_for_metric(&self, series: &str, wanted: impl Fn(f64) -> bool) {
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
pub async fn change_instructions(api: &Api, id: &str, instructions: &str) -> Reply {
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
pub fn order_scans(psql: impl Fn(&str, &str) -> String) -> i64 {
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
pub async fn scans_grow(scans: impl Fn() -> i64, before: i64, at_least: i64) -> i64 {
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

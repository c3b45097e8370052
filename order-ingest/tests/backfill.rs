//! `order-ingest backfill`: checkout's `orders` table copied into orderdb by the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use order_ingest::event::{decode, Decoded};
use order_store::orders::{insert_if_absent, page_by_id};
use order_store::NewOrder;
use order_test_support::db::TestDatabase;
use order_test_support::fixtures;
use order_test_support::tls::PgBouncer;

fn order_of(payload: &str) -> NewOrder {
    match decode(Some(payload.as_bytes()), ORDER_TYPE).unwrap() {
        Decoded::Order(event) => event.order,
        Decoded::Skip(_) => panic!("an order"),
    }
}

async fn backfill(source: &str, target: &str, extra: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_order-ingest"));
    cmd.env_clear()
        .env("DATABASE_URL", target)
        .args([
            "backfill",
            "--source-database-url",
            source,
            "--batch-size",
            "7",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("backfill finishes")
    .unwrap()
    .unwrap();
    // The progress lines, then the error lines.
    let stdout =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_copies_every_order_idempotently_and_resumes_after_an_id() {
    // checkout's database: a table of the same shape, filled with fixtures and generated orders.
    let source = TestDatabase::new().await;
    let source_pool = source.pool();
    let mut orders: Vec<NewOrder> = [
        "order-completed-delivery.json",
        "order-completed-immediate-minimal.json",
        "order-completed-large-amount.json",
    ]
    .iter()
    .map(|name| order_of(&fixtures::read(name)))
    .collect();
    for _ in 0..20 {
        orders.push(order_of(&synthetic_event(6).1));
    }
    {
        let mut conn = source_pool.get().await.unwrap();
        insert_if_absent(&mut conn, &orders).await.unwrap();
    }
    let (target, target_pool) = database().await;

    let (code, stdout) = backfill(source.url(), target.url(), &[]).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("backfill: read=7 inserted=7"),
        "progress per batch: {stdout}"
    );
    assert!(
        stdout.contains("read=23 inserted=23 already_present=0 rejected=0"),
        "{stdout}"
    );
    assert_eq!(row_count(&target_pool).await, 23);
    let copied = {
        let mut conn = target_pool.get().await.unwrap();
        page_by_id(&mut conn, None, 100).await.unwrap()
    };
    let originals = {
        let mut conn = source_pool.get().await.unwrap();
        page_by_id(&mut conn, None, 100).await.unwrap()
    };
    assert_eq!(copied, originals, "every field equal");

    // Again from the start: nothing new.
    let (code, stdout) = backfill(source.url(), target.url(), &[]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("read=23 inserted=0 already_present=23"),
        "{stdout}"
    );

    // Resumed after the 10th id: only the rest is read.
    let after = originals[9].id.to_string();
    let (code, stdout) = backfill(source.url(), target.url(), &["--after", &after]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("read=13 inserted=0 already_present=13"),
        "{stdout}"
    );
    assert_eq!(row_count(&target_pool).await, 23);
}

/// Other clients of the pooler, reading in a loop until `stop`, so that consecutive
/// transactions of the backfill land on different server connections, as on a busy pooler.
fn busy_pooler(url: &str, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut args = order_store::DbArgs::for_url(url);
    args.db_pool_size = 3;
    args.db_prepared_statements = order_store::db::OnOff::Off;
    let pool = order_store::build_pool(&args, "backfill-test-noise");
    (0..3)
        .map(|_| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut conn = pool.get().await.unwrap();
                    page_by_id(&mut conn, None, 1).await.unwrap();
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_a_source_behind_pgbouncer_in_transaction_mode() {
    let source = TestDatabase::new().await;
    let source_pool = source.pool();
    let orders: Vec<NewOrder> = (0..60).map(|_| order_of(&synthetic_event(9).1)).collect();
    {
        let mut conn = source_pool.get().await.unwrap();
        insert_if_absent(&mut conn, &orders).await.unwrap();
    }
    let bouncer = PgBouncer::start(source.name(), "transaction", 2);
    let pooled_source = bouncer.url(source.name());
    let stop = Arc::new(AtomicBool::new(false));
    let noise = busy_pooler(&pooled_source, &stop);

    // The control: with named prepared statements (the default) the same copy fails, which
    // proves that the pooler is in the path and that the flag is what fixes it.
    let (control, _) = database().await;
    let (code, stdout) = backfill(&pooled_source, control.url(), &[]).await;
    assert_ne!(
        code, 0,
        "prepared statements unexpectedly survived the pooler: {stdout}"
    );
    assert!(stdout.contains("prepared statement"), "{stdout}");

    let (target, target_pool) = database().await;
    let (code, stdout) = backfill(
        &pooled_source,
        target.url(),
        &["--source-db-prepared-statements", "off"],
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in noise {
        task.await.unwrap();
    }
    assert_eq!(code, 0, "{stdout}\npgbouncer: {}", bouncer.log());
    assert!(
        stdout.contains("read=60 inserted=60 already_present=0 rejected=0"),
        "{stdout}"
    );
    assert_eq!(row_count(&target_pool).await, 60);
}

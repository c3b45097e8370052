//! The real `order-ingest` binary behind Debian's PgBouncer in transaction pooling,
//! with `--db-prepared-statements off`: every published order lands once. The pooler is the
//! test's own, on a spare port, in front of the test's own database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use order_test_support::db::TestDatabase;
use order_test_support::spare_port;
use order_test_support::tls::PgBouncer;

const BIN: &str = env!("CARGO_BIN_EXE_order-ingest");
const EVENTS: usize = 300;

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingests_through_pgbouncer_transaction_mode() {
    let db = TestDatabase::new().await;
    let bouncer = PgBouncer::start(db.name(), "transaction", 2);
    let stream = format!("test:{}:orders", uuid::Uuid::new_v4().simple());
    let ingest = || {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("DATABASE_URL", bouncer.url(db.name()))
            .env("DB_PREPARED_STATEMENTS", "off")
            .env("REDIS_URL", redis_url())
            .env("ORDER_STREAM_KEY", &stream)
            .env("ORDER_CONSUMER_NAME", "pgbouncer-test")
            .env("ORDER_BLOCK_MS", "200")
            .env("ORDER_BATCH_SIZE", "50")
            .env(
                "ORDER_INGEST_METRICS_ADDR",
                format!("127.0.0.1:{}", spare_port()),
            );
        cmd
    };
    let log =
        std::fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join("pgbouncer-ingest.log"))
            .unwrap();
    let mut consumer = ingest().stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let out = ingest()
        .args(["publish-sample", "--count", &EVENTS.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let count = || {
        let out = Command::new("psql")
            .args([
                "-X",
                "-t",
                "-A",
                "-d",
                db.url(),
                "-c",
                "SELECT count(*) FROM orders",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<usize>()
            .unwrap_or(0)
    };
    let started = Instant::now();
    while count() < EVENTS {
        if let Some(status) = consumer.try_wait().unwrap() {
            panic!(
                "order-ingest exited ({status}) with {} of {EVENTS} orders",
                count()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {EVENTS} orders after 60 s",
            count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count(), EVENTS);
    let _ = Command::new("kill")
        .args(["-TERM", &consumer.id().to_string()])
        .status();
    let status = consumer.wait().unwrap();
    let _ = Command::new("redis-cli")
        .args(["-u", &redis_url(), "DEL", &stream, &format!("{stream}:dlq")])
        .output();
    assert!(status.success(), "clean exit: {status}");
    drop(bouncer);
}

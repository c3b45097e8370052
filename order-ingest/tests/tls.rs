//! The real `order-ingest` binary over TLS: PostgreSQL with `sslmode=verify-full`
//! and `sslrootcert`, Redis over `rediss://` trusted through `SSL_CERT_FILE` (reader, command
//! connection, `publish-sample`, and again after that Redis restarts), and one clear line and a
//! non-zero exit for a wrong CA or a wrong host name. Private servers only: the
//! shared ones are never reconfigured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use order_test_support::spare_port;
use order_test_support::tls::{refusal, Pki, TlsPostgres, TlsRedis};

const BIN: &str = env!("CARGO_BIN_EXE_order-ingest");

fn ingest(db_url: &str, redis_url: &str, cert_file: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("DATABASE_URL", db_url)
        .env("REDIS_URL", redis_url)
        .env("SSL_CERT_FILE", cert_file)
        .env("ORDER_STREAM_KEY", "orders:tls")
        .env("ORDER_CONSUMER_NAME", "tls-test")
        .env("ORDER_BLOCK_MS", "200")
        .env("DB_CONNECT_TIMEOUT_MS", "3000")
        .env(
            "ORDER_INGEST_METRICS_ADDR",
            format!("127.0.0.1:{}", spare_port()),
        );
    cmd
}

fn publish(db_url: &str, redis_url: &str, cert_file: &Path, count: u32) {
    let out = ingest(db_url, redis_url, cert_file)
        .args(["publish-sample", "--count", &count.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "publish-sample over rediss:// failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for_orders(pg: &TlsPostgres, expected: usize, consumer: &mut Child) {
    let started = Instant::now();
    loop {
        let n: usize = pg
            .psql("postgres", "SELECT count(*) FROM orders")
            .trim()
            .parse()
            .unwrap_or(0);
        if n >= expected {
            assert_eq!(n, expected);
            return;
        }
        if let Some(status) = consumer.try_wait().unwrap() {
            panic!("order-ingest exited ({status}) with {n} of {expected} orders stored");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{n} of {expected} orders after 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ingests_over_verify_full_and_rediss_across_a_redis_restart() {
    let pki = Pki::new();
    let pg = TlsPostgres::start(&pki);
    let mut redis = TlsRedis::start(&pki);
    let ca = pki.ca();
    let db_url = pg.url(
        "localhost",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );

    let log = std::fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-ingest.log"))
        .unwrap();
    let mut consumer = ingest(&db_url, &redis.url(), &ca)
        .arg("--migrate")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    publish(&db_url, &redis.url(), &ca, 40);
    wait_for_orders(&pg, 40, &mut consumer);
    assert_eq!(
        pg.psql("postgres", "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name LIKE 'order-ingest%'")
            .trim(),
        "t",
        "every connection of order-ingest is encrypted"
    );

    // The consumer's connections die with the server; it reconnects over TLS by itself.
    redis.restart(Duration::from_millis(500));
    publish(&db_url, &redis.url(), &ca, 40);
    wait_for_orders(&pg, 80, &mut consumer);

    let _ = Command::new("kill")
        .args(["-TERM", &consumer.id().to_string()])
        .status();
    let status = consumer.wait().unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status}");

    // Refusals, each one line and a non-zero exit, never a plain-text fallback.
    let other = pki.other_ca();
    let wrong_ca = format!(
        "postgres://postgres:s3cret-pw@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        other.display()
    );
    let line = refusal(
        "order-ingest",
        &ingest(&wrong_ca, &redis.url(), &ca).output().unwrap(),
    );
    assert!(
        line.contains("invalid peer certificate: UnknownIssuer"),
        "{line}"
    );
    assert!(!line.contains("s3cret-pw"), "password in {line}");

    let wrong_host = format!(
        "postgres://postgres:s3cret-pw@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        ca.display()
    );
    let line = refusal(
        "order-ingest",
        &ingest(&wrong_host, &redis.url(), &ca).output().unwrap(),
    );
    assert!(line.contains("sslmode=verify-full"), "{line}");
    assert!(line.contains("not valid for name"), "{line}");
    assert!(!line.contains("s3cret-pw"), "password in {line}");

    // Redis with a certificate SSL_CERT_FILE does not vouch for, and with a wrong host name.
    let line = refusal(
        "order-ingest",
        &ingest(&db_url, &redis.url(), &other).output().unwrap(),
    );
    assert!(line.contains("cannot reach Redis"), "{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
    let line = refusal(
        "order-ingest",
        &ingest(
            &db_url,
            &format!("rediss://127.0.0.1:{}", redis.port()),
            &ca,
        )
        .output()
        .unwrap(),
    );
    assert!(line.contains("cannot reach Redis"), "{line}");
    assert!(line.contains("not valid for name"), "{line}");
}

//! The real `order-api` binary behind Debian's PgBouncer in transaction pooling: with
//! `--db-prepared-statements off`, thousands of `GET /orders/{id}` from concurrent clients all
//! answer 200 (without it, reads fail with `prepared statement "s8" does not exist` once a
//! statement prepared on one server connection is executed on another). The pooler is the test's own, on a spare port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use order_test_support::db::TestDatabase;
use order_test_support::spare_port;
use order_test_support::tls::PgBouncer;

const BIN: &str = env!("CARGO_BIN_EXE_order-api");
const ORDERS: usize = 50;
const CLIENTS: usize = 16;
const REQUESTS_PER_CLIENT: usize = 200;

fn status_of(port: u16, path: &str) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_reads_through_pgbouncer_transaction_mode() {
    let db = TestDatabase::new().await;
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db.url(),
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    psql(&format!(
        "INSERT INTO orders (id, store_number, order_number, customer_id, fulfillment_type, \
         subtotal, discount_total, tax_total, fulfillment_cost, grand_total, payment_status, \
         status, line_items, applied_discounts, created_at, updated_at) \
         SELECT md5(n::text)::uuid, 1, 'ORD-PGB-' || n, 'c-1', 'DELIVERY', 10, 0, 0, 0, 10, \
         'COMPLETED', 'PAID', '[]', '[]', now(), now() FROM generate_series(1, {ORDERS}) AS n"
    ));
    let ids: Vec<String> = psql("SELECT id FROM orders")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), ORDERS);

    let bouncer = PgBouncer::start(db.name(), "transaction", 4);
    let port = spare_port();
    let log =
        std::fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join("pgbouncer-api.log"))
            .unwrap();
    let mut server = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", bouncer.url(db.name()))
        .env("DB_PREPARED_STATEMENTS", "off")
        .env("DB_POOL_SIZE", "16")
        .env("ORDER_API_ADDR", format!("127.0.0.1:{port}"))
        .arg("--auth-disabled")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    let result = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        while status_of(port, "/health/ready") != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "order-api did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let ids = ids.clone();
                std::thread::spawn(move || {
                    let mut failed = Vec::new();
                    for i in 0..REQUESTS_PER_CLIENT {
                        let id = &ids[(c * REQUESTS_PER_CLIENT + i) % ids.len()];
                        let status = status_of(port, &format!("/orders/{id}"));
                        if status != Some(200) {
                            failed.push(status);
                        }
                    }
                    failed
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    })
    .await;
    let _ = server.kill();
    let _ = server.wait();
    let failed = result.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} GET /orders/{{id}} through PgBouncer did not answer 200: {:?}",
        failed.len(),
        CLIENTS * REQUESTS_PER_CLIENT,
        &failed[..failed.len().min(10)]
    );
    drop(bouncer);
}

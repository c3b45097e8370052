//! Migrations up, down and up again; adoption of a Flyway-created table; pods racing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use order_store::migrations;
use order_test_support::db::TestDatabase;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

async fn scalar(db: &TestDatabase, query: &str) -> i64 {
    diesel::sql_query(query)
        .get_result::<Count>(&mut db.connection().await)
        .await
        .unwrap()
        .n
}

async fn index_names(db: &TestDatabase) -> Vec<String> {
    diesel::sql_query(
        "SELECT indexname AS name FROM pg_indexes WHERE tablename = 'orders' ORDER BY 1",
    )
    .load::<Name>(&mut db.connection().await)
    .await
    .unwrap()
    .into_iter()
    .map(|n| n.name)
    .collect()
}

const ORDERS_EXISTS: &str = "SELECT count(*) AS n FROM pg_tables WHERE tablename = 'orders'";

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let db = TestDatabase::empty().await;
    assert_eq!(migrations::pending(db.url()).await.unwrap().len(), 3);
    assert_eq!(
        migrations::run_pending_locked(db.url())
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(migrations::pending(db.url()).await.unwrap().is_empty());
    assert_eq!(scalar(&db, ORDERS_EXISTS).await, 1);
    assert_eq!(
        index_names(&db).await.len(),
        11,
        "{:?}",
        index_names(&db).await
    );

    migrations::revert_all(db.url()).await.unwrap();
    assert_eq!(scalar(&db, ORDERS_EXISTS).await, 0);
    assert_eq!(migrations::pending(db.url()).await.unwrap().len(), 3);

    migrations::run_pending_locked(db.url()).await.unwrap();
    assert!(migrations::pending(db.url()).await.unwrap().is_empty());
    assert_eq!(scalar(&db, ORDERS_EXISTS).await, 1);
}

/// The existing service's Flyway migration, as it created `orders` in production.
const FLYWAY_V1: &str = r"
CREATE TABLE orders (
    id UUID PRIMARY KEY, store_number INTEGER NOT NULL, order_number VARCHAR(50) NOT NULL UNIQUE,
    customer_id VARCHAR(100), fulfillment_type VARCHAR(20) NOT NULL, fulfillment_date TIMESTAMPTZ,
    reservation_id UUID, subtotal DECIMAL(12,2) NOT NULL, discount_total DECIMAL(12,2) NOT NULL DEFAULT 0,
    tax_total DECIMAL(12,2) NOT NULL DEFAULT 0, fulfillment_cost DECIMAL(12,2) NOT NULL DEFAULT 0,
    grand_total DECIMAL(12,2) NOT NULL, payment_status VARCHAR(20) NOT NULL DEFAULT 'PENDING',
    payment_method VARCHAR(50), payment_reference VARCHAR(100), status VARCHAR(20) NOT NULL DEFAULT 'CREATED',
    line_items JSONB NOT NULL, applied_discounts JSONB NOT NULL DEFAULT '[]', customer_snapshot JSONB,
    fulfillment_details JSONB, created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), created_by VARCHAR(50), session_id UUID
);
CREATE INDEX idx_orders_store_number ON orders(store_number);
CREATE INDEX idx_orders_customer_id ON orders(customer_id);
CREATE INDEX idx_orders_status ON orders(status);
CREATE INDEX idx_orders_created_at ON orders(created_at DESC);
CREATE INDEX idx_orders_fulfillment_type ON orders(fulfillment_type);
CREATE INDEX idx_orders_fulfillment_date ON orders(fulfillment_date);
CREATE INDEX idx_orders_line_items ON orders USING GIN(line_items);
INSERT INTO orders (id, store_number, order_number, fulfillment_type, subtotal, grand_total, line_items)
VALUES ('11111111-1111-1111-1111-111111111111', 5, 'LEGACY-1', 'PICKUP', 12.50, 12.50, '[]');
";

#[tokio::test]
async fn a_flyway_created_database_is_adopted_without_data_loss() {
    let db = TestDatabase::empty().await;
    let mut conn = db.connection().await;
    for statement in FLYWAY_V1.split(';').filter(|s| !s.trim().is_empty()) {
        diesel::sql_query(statement)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let before = index_names(&db).await;
    migrations::run_pending_locked(db.url()).await.unwrap();
    assert!(migrations::pending(db.url()).await.unwrap().is_empty());
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) AS n FROM orders WHERE order_number = 'LEGACY-1'"
        )
        .await,
        1
    );
    let after = index_names(&db).await;
    // The first migration added nothing; the second added only the two listing indexes.
    assert_eq!(after.len(), before.len() + 2, "{before:?} -> {after:?}");
    let legacy = order_store::orders::find_by_order_number(&conn, "LEGACY-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(legacy.store_number, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_starting_together_migrate_once() {
    let db = TestDatabase::empty().await;
    let url = db.url().to_owned();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { migrations::run_pending_locked(&url).await.unwrap().len() })
        })
        .collect();
    let mut applied = 0;
    for run in runs {
        applied += run.await.unwrap();
    }
    assert_eq!(applied, 3, "each migration applied by exactly one pod");
}

#[tokio::test]
async fn start_up_refuses_a_stale_schema_and_names_the_fix() {
    let db = TestDatabase::empty().await;
    let err = order_store::prepare_database(&db.args(), "test")
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("--migrate") && message.contains("diesel migration run"),
        "{message}"
    );

    let mut args = db.args();
    args.migrate = true;
    let pool = order_store::prepare_database(&args, "test").await.unwrap();
    order_store::orders::ping(&mut pool.get().await.unwrap())
        .await
        .unwrap();
    order_store::prepare_database(&db.args(), "test")
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_database_is_a_transient_error() {
    // Port 9 (discard) on loopback: nothing listens there.
    let args = order_store::DbArgs::for_url("postgres://postgres@127.0.0.1:9/orderdb");
    let err = order_store::prepare_database(&args, "test")
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
}

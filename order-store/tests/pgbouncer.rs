//! Behind PgBouncer in transaction pooling, with Debian's pgbouncer started by the
//! test on a spare port: with prepared statements off the pool's queries never depend on a
//! server connection they did not run on, and migrations, which need a session-level advisory
//! lock, refuse clearly instead of running unprotected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use order_store::db::OnOff;
use order_store::{migrations, StoreError};
use order_test_support::db::TestDatabase;
use order_test_support::tls::PgBouncer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_refuse_a_transaction_pooler_and_leave_no_lock_behind() {
    let db = TestDatabase::empty().await;
    let bouncer = PgBouncer::start(db.name(), "transaction", 3);
    let through_pooler = bouncer.url(db.name());

    // Reading what is pending is fine through the pooler.
    assert_eq!(migrations::pending(&through_pooler).await.unwrap().len(), 3);

    let error = migrations::run_pending_locked(&through_pooler)
        .await
        .expect_err("migrations through a transaction pooler must be refused");
    assert!(
        matches!(error, StoreError::MigrationLockShared(_)),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("not through a connection pooler"),
        "{message}"
    );
    assert_eq!(
        migrations::pending(&through_pooler).await.unwrap().len(),
        3,
        "nothing applied"
    );

    // The refused run left its lock nowhere: a direct run gets it at once.
    let applied = tokio::time::timeout(
        Duration::from_secs(20),
        migrations::run_pending_locked(db.url()),
    )
    .await
    .expect("the migration lock was left held on a pooled server connection")
    .unwrap();
    assert_eq!(applied.len(), 3);
}

/// 1,200 point reads from 12 concurrent tasks through the pooler; the failures.
async fn reads_through(bouncer: &PgBouncer, db: &TestDatabase, prepared: OnOff) -> Vec<String> {
    let mut args = order_store::DbArgs::for_url(bouncer.url(db.name()));
    args.db_pool_size = 12;
    args.db_prepared_statements = prepared;
    let pool = order_store::build_pool(&args, "pgbouncer-test");
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..100 {
                let conn = pool.get().await.unwrap();
                let id = uuid::Uuid::new_v4();
                match order_store::orders::find_by_id(&conn, id).await {
                    Ok(None) => {}
                    other => failures.push(format!("{other:?}")),
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    failures
}

/// PgBouncer's log lines that explain a failure ("got packet 'Z' from server when not linked",
/// a closed server connection), at most 40.
fn bouncer_complaints(bouncer: &PgBouncer) -> String {
    let log = bouncer.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("WARNING") || line.contains("ERROR"))
        .take(40)
        .collect();
    if lines.is_empty() {
        "(none)".to_owned()
    } else {
        lines.join("\n")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_without_prepared_statements_works_in_transaction_mode() {
    let db = TestDatabase::new().await;
    let bouncer = PgBouncer::start(db.name(), "transaction", 2);

    let failures = reads_through(&bouncer, &db, OnOff::Off).await;
    assert!(
        failures.is_empty(),
        "{} of 1200 reads failed, first: {:?}; pgbouncer's warnings and errors:\n{}",
        failures.len(),
        failures.first(),
        bouncer_complaints(&bouncer)
    );

    // The control: with the default (named, cached statements) the same reads fail, which
    // proves the pooler is in the path and the setting is what fixes it.
    let failures = reads_through(&bouncer, &db, OnOff::On).await;
    assert!(
        !failures.is_empty(),
        "prepared statements unexpectedly survived the pooler"
    );
    assert!(
        failures.iter().any(|f| f.contains("prepared statement")),
        "{failures:?}"
    );
}

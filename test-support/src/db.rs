//! A fresh, migrated database per test, dropped when the test ends (after crates.io's
//! test-db crate, in miniature). The server comes from `TEST_DATABASE_URL`, an admin URL
//! that may create databases; by default the local PostgreSQL as `postgres`.
//!
//! Its `expect`s fire only when the test server itself
//! is unusable (unreachable, cannot create a database), and a panic with that message is how
//! a test reports it.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::missing_panics_doc)]

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use order_store::{build_pool, DbArgs, Pool};

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// `url` with its database name replaced by `name` (query parameters dropped).
pub fn url_for_database(url: &str, name: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let (server, _) = base.rsplit_once('/').expect("a database URL has a path");
    format!("{server}/{name}")
}

pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// A new database with every migration applied.
    pub async fn new() -> Self {
        let db = Self::empty().await;
        order_store::migrations::run_pending_locked(&db.url)
            .await
            .expect("migrations apply");
        db
    }

    /// A new database with nothing in it.
    pub async fn empty() -> Self {
        let name = format!("order_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_url();
        let mut conn = AsyncPgConnection::establish(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin}: {e}"));
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        let url = url_for_database(&admin, &name);
        Self { name, url }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn args(&self) -> DbArgs {
        DbArgs::for_url(&self.url)
    }

    pub fn pool(&self) -> Pool {
        build_pool(&self.args(), "order-store-test")
    }

    pub async fn connection(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to test database")
    }

    /// The one value `sql` (a query of one row and one column) answers, as text, on a
    /// connection of its own.
    pub async fn value(&self, sql: &str) -> String {
        #[derive(diesel::QueryableByName)]
        struct Value {
            #[diesel(sql_type = diesel::sql_types::Text)]
            v: String,
        }
        diesel::sql_query(format!("SELECT ({sql})::text AS v"))
            .get_result::<Value>(&mut self.connection().await)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .v
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on itself: the database is
        // dropped from a thread with a runtime of its own. FORCE ends the test's connections.
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut conn) = AsyncPgConnection::establish(&admin_url()).await {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                }
            });
        });
        let _ = handle.join();
    }
}

//! TLS to PostgreSQL against a private server with `ssl=on` and a certificate for
//! `localhost` signed by a test CA: libpq's `sslmode` meanings, `sslrootcert`, and one clear
//! error for a wrong CA or a wrong host name. The binaries' start-up over TLS is tested in
//! order-api/tests/tls.rs and order-ingest/tests/tls.rs.

use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use order_store::{DbArgs, StoreError};
use order_test_support::tls::{Pki, TlsPostgres};

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    ssl: bool,
}

async fn uses_tls(url: &str) -> Result<bool, StoreError> {
    let mut conn = order_store::runtime::tls::establish(url).await?;
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .await?;
    Ok(row.ssl)
}

#[tokio::test]
async fn sslmodes_follow_libpq() {
    let pki = Pki::new();
    let pg = TlsPostgres::start(&pki);
    let ca = pki.ca();
    let ca = ca.display();
    let other = pki.other_ca();
    let other = other.display();

    // verify-full with the right CA and host: the start-up path of both binaries, migrations
    // included, and the pool.
    let url = pg.url(
        "localhost",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let mut args = DbArgs::for_url(&url);
    args.migrate = true;
    let pool = order_store::prepare_database(&args, "tls-test")
        .await
        .unwrap();
    let mut conn = pool.get().await.unwrap();
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut *conn)
        .await
        .unwrap();
    assert!(row.ssl, "the pool's connection is encrypted");
    drop(conn);
    assert!(order_store::migrations::pending(&url)
        .await
        .unwrap()
        .is_empty());

    // The default (prefer) and require encrypt without checking the certificate.
    assert!(uses_tls(&pg.url("127.0.0.1", "postgres", ""))
        .await
        .unwrap());
    assert!(
        uses_tls(&pg.url("127.0.0.1", "postgres", "sslmode=require"))
            .await
            .unwrap()
    );
    // verify-ca checks the chain only: the wrong host name is fine.
    assert!(uses_tls(&pg.url(
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-ca&sslrootcert={ca}")
    ))
    .await
    .unwrap());
    // disable is plain.
    assert!(
        !uses_tls(&pg.url("127.0.0.1", "postgres", "sslmode=disable"))
            .await
            .unwrap()
    );

    // A wrong CA: refused, whatever the mode that verifies (require + sslrootcert = verify-ca).
    for query in [
        format!("sslmode=verify-full&sslrootcert={other}"),
        format!("sslmode=verify-ca&sslrootcert={other}"),
        format!("sslmode=require&sslrootcert={other}"),
    ] {
        let error = uses_tls(&pg.url("localhost", "postgres", &query))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("invalid peer certificate"),
            "{query}: {error}"
        );
        assert!(error.contains("UnknownIssuer"), "{query}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
    // A wrong host name under verify-full: refused, never downgraded.
    let error = uses_tls(&pg.url(
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("sslmode=verify-full"), "{error}");
    assert!(error.contains("not valid for name"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");

    // Verification against the default roots (no sslrootcert, SSL_CERT_FILE unset in this
    // process): the test CA is not among them.
    if std::env::var_os("SSL_CERT_FILE").is_none() {
        let error = uses_tls(&pg.url("localhost", "postgres", "sslmode=verify-full"))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("UnknownIssuer"), "{error}");
    }

    // Bad parameters are clear too.
    let error = uses_tls(&pg.url("localhost", "postgres", "sslmode=sometimes"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("invalid sslmode \"sometimes\""), "{error}");
    let error = uses_tls(&pg.url(
        "localhost",
        "postgres",
        "sslmode=verify-full&sslrootcert=/nonexistent.pem",
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("cannot read the CA bundle /nonexistent.pem (sslrootcert)"),
        "{error}"
    );
}

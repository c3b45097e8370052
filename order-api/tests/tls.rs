//! The real `order-api` binary over TLS: PostgreSQL with `sslmode=verify-full` and
//! `sslrootcert` (and `require`), one clear line and a non-zero exit for a wrong CA or a wrong
//! host name, and an `https://` JWKS whose certificate is verified against `SSL_CERT_FILE`.
//! Private PostgreSQL and JWKS servers: the shared ones are never reconfigured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use order_test_support::db::TestDatabase;
use order_test_support::spare_port;
use order_test_support::tls::{refusal, Pki, TempDir, TlsPostgres};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const BIN: &str = env!("CARGO_BIN_EXE_order-api");
const ISSUER: &str = "https://users.test";

fn api(port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("DB_CONNECT_TIMEOUT_MS", "3000")
        .env("ORDER_API_ADDR", format!("127.0.0.1:{port}"));
    cmd
}

/// `GET path` with an optional bearer token: the status code, or `None` if nothing answers.
fn get(port: u16, path: &str, token: Option<&str>) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(cmd: &mut Command, port: u16, log: &str) -> Running {
    let log = std::fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join(log)).unwrap();
    let mut child = Running(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap());
    let started = Instant::now();
    while get(port, "/health/live", None) != Some(200) {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("order-api exited at start-up: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "order-api did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

#[test]
fn serves_over_verify_full_and_refuses_a_wrong_ca_or_host() {
    let pki = Pki::new();
    let pg = TlsPostgres::start(&pki);
    let ca = pki.ca();
    let verify_full = pg.url(
        "localhost",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );

    let port = spare_port();
    let server = start(
        api(port)
            .env("DATABASE_URL", &verify_full)
            .args(["--auth-disabled", "--migrate"]),
        port,
        "tls-api-verify-full.log",
    );
    pg.psql(
        "postgres",
        "INSERT INTO orders (id, store_number, order_number, customer_id, fulfillment_type, \
         subtotal, discount_total, tax_total, fulfillment_cost, grand_total, payment_status, \
         status, line_items, applied_discounts, created_at, updated_at) VALUES \
         ('6f1c1b5e-3c1e-4c47-9a57-3a2f0b1d9e01', 7, 'ORD-TLS-1', 'c-1', 'DELIVERY', 10, 0, 0, 0, \
         10, 'COMPLETED', 'PAID', '[]', '[]', now(), now())",
    );
    assert_eq!(
        get(port, "/orders/6f1c1b5e-3c1e-4c47-9a57-3a2f0b1d9e01", None),
        Some(200)
    );
    assert_eq!(get(port, "/health/ready", None), Some(200));
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'order-api'"
        )
        .trim(),
        "t"
    );
    drop(server);

    // require: encrypted, the certificate not checked (here: a host name it does not name).
    let port = spare_port();
    let server = start(
        api(port)
            .env(
                "DATABASE_URL",
                pg.url("127.0.0.1", "postgres", "sslmode=require"),
            )
            .arg("--auth-disabled"),
        port,
        "tls-api-require.log",
    );
    assert_eq!(
        get(port, "/orders/6f1c1b5e-3c1e-4c47-9a57-3a2f0b1d9e01", None),
        Some(200)
    );
    drop(server);

    // A wrong CA and a wrong host name: one line each, non-zero exit, no password.
    let wrong_ca = format!(
        "postgres://postgres:s3cret-pw@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        pki.other_ca().display()
    );
    let line = refusal(
        "order-api",
        &api(spare_port())
            .env("DATABASE_URL", &wrong_ca)
            .arg("--auth-disabled")
            .output()
            .unwrap(),
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
        "order-api",
        &api(spare_port())
            .env("DATABASE_URL", &wrong_host)
            .arg("--auth-disabled")
            .output()
            .unwrap(),
    );
    assert!(line.contains("sslmode=verify-full"), "{line}");
    assert!(line.contains("not valid for name"), "{line}");
    assert!(!line.contains("s3cret-pw"), "password in {line}");
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A P-256 key: its PEM (PKCS#8) for signing and its JWK (kid `tls-key`) for the JWKS.
fn signing_key(dir: &Path) -> (Vec<u8>, serde_json::Value) {
    let key = dir.join("jwt.pem");
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap()
        .stdout;
    // The SubjectPublicKeyInfo ends with the uncompressed point 04 || X || Y.
    let point = &der[der.len() - 64..];
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "kid": "tls-key", "use": "sig", "alg": "ES256",
        "x": base64url(&point[..32]), "y": base64url(&point[32..]),
    });
    (std::fs::read(key).unwrap(), jwk)
}

fn token(pem: &[u8]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("tls-key".into());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &header,
        &serde_json::json!({
            "iss": ISSUER, "aud": "reactive-test-api", "exp": exp, "sub": "tls-test",
            "scope": "order:read",
        }),
        &jsonwebtoken::EncodingKey::from_ec_pem(pem).unwrap(),
    )
    .unwrap()
}

/// An HTTPS server answering every request with `body`, with the test CA's `localhost`
/// certificate. Returns its port.
async fn https_jwks(pki: &Pki, body: String) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.server_cert())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.server_key()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(order_store::runtime::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let body = body.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends here with a handshake error.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// order-api with `--jwks-url` and `SSL_CERT_FILE`, started (blocking: run it off the runtime).
fn start_with_jwks(
    db_url: String,
    jwks_url: &str,
    cert_file: std::path::PathBuf,
    log: &'static str,
) -> (Running, u16) {
    let port = spare_port();
    let mut cmd = api(port);
    cmd.env("DATABASE_URL", db_url)
        .env("SSL_CERT_FILE", cert_file)
        .args(["--jwks-url", jwks_url, "--jwt-issuers", ISSUER]);
    (start(&mut cmd, port, log), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_jwks_is_verified() {
    const MISSING: &str = "/orders/00000000-0000-4000-8000-000000000001";
    let db = TestDatabase::new().await;
    let pki = Pki::new();
    let dir = TempDir::new("order-tls-jwt");
    let (pem, jwk) = signing_key(dir.path());
    let jwks_port = https_jwks(&pki, serde_json::json!({ "keys": [jwk] }).to_string()).await;
    let jwks_url = format!("https://localhost:{jwks_port}/.well-known/jwks.json");
    let token = token(&pem);

    // Trusted through SSL_CERT_FILE: the token verifies (404: authenticated, no such order).
    let (url, jwks, ca) = (db.url().to_owned(), jwks_url.clone(), pki.ca());
    let t = token.clone();
    let statuses = tokio::task::spawn_blocking(move || {
        let (_server, port) = start_with_jwks(url, &jwks, ca, "tls-jwks-trusted.log");
        (get(port, MISSING, Some(&t)), get(port, MISSING, None))
    })
    .await
    .unwrap();
    assert_eq!(statuses, (Some(404), Some(401)));

    // A certificate SSL_CERT_FILE does not vouch for: no keys, so the same token is refused.
    let (url, jwks, other) = (db.url().to_owned(), jwks_url.clone(), pki.other_ca());
    let t = token.clone();
    let status = tokio::task::spawn_blocking(move || {
        let (_server, port) = start_with_jwks(url, &jwks, other, "tls-jwks-untrusted.log");
        get(port, MISSING, Some(&t))
    })
    .await
    .unwrap();
    assert_eq!(status, Some(401));
    let log = std::fs::read_to_string(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-jwks-untrusted.log"),
    )
    .unwrap();
    assert!(
        log.contains("UnknownIssuer"),
        "the refusal is logged: {log}"
    );
}

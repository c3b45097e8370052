//! Test support: keys and tokens made with the `openssl` CLI and `jsonwebtoken`, a real server
//! on an ephemeral port over a fresh database, and the requests the tests make (over the HTTP
//! client of `order_test_support::http`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use clap::Parser as _;
use hyper::Method;
use jsonwebtoken::{EncodingKey, Header};
use order_api::auth::Auth;
use order_api::config::Config;
use order_api::{AppState, Limits};
use order_store::orders::{self, InsertOutcome};
use order_store::NewOrder;
use order_test_support::db::TestDatabase;
pub use order_test_support::http::{exchange, send, Reply};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

pub const ISSUER: &str = "https://users.test";
pub const AUDIENCE: &str = "reactive-test-api";
pub const WAIT: Duration = Duration::from_secs(30);

/// Keys generated once per test process.
pub struct Keys {
    pub rsa_private: Vec<u8>,
    pub rsa_public_file: PathBuf,
    /// base64url modulus of the RSA key, for a JWKS.
    pub rsa_n: String,
    pub ec_private: Vec<u8>,
    /// base64url x and y of the EC key, for a JWKS.
    pub ec_x: String,
    pub ec_y: String,
    pub ec_public_file: PathBuf,
    pub other_rsa_private: Vec<u8>,
    pub rsa_public_pem: Vec<u8>,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("order-api-test-keys-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |name: &str| dir.join(name);
        let s = |path: &PathBuf| path.to_str().unwrap().to_owned();
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &s(&p("rsa.pem")),
        ]);
        openssl(&[
            "pkey",
            "-in",
            &s(&p("rsa.pem")),
            "-pubout",
            "-out",
            &s(&p("rsa.pub.pem")),
        ]);
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &s(&p("other.pem")),
        ]);
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &s(&p("ec.pem")),
        ]);
        openssl(&[
            "pkey",
            "-in",
            &s(&p("ec.pem")),
            "-pubout",
            "-out",
            &s(&p("ec.pub.pem")),
        ]);
        let modulus = String::from_utf8(openssl(&[
            "rsa",
            "-in",
            &s(&p("rsa.pem")),
            "-noout",
            "-modulus",
        ]))
        .unwrap();
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let der = openssl(&[
            "pkey",
            "-in",
            &s(&p("ec.pem")),
            "-pubout",
            "-outform",
            "DER",
        ]);
        let point = &der[der.len() - 64..]; // SPKI ends with the uncompressed point 04||X||Y
        Keys {
            ec_x: b64url(&point[..32]),
            ec_y: b64url(&point[32..]),
            rsa_private: std::fs::read(p("rsa.pem")).unwrap(),
            rsa_public_file: p("rsa.pub.pem"),
            rsa_public_pem: std::fs::read(p("rsa.pub.pem")).unwrap(),
            rsa_n: b64url(&bytes),
            ec_private: std::fs::read(p("ec.pem")).unwrap(),
            ec_public_file: p("ec.pub.pem"),
            other_rsa_private: std::fs::read(p("other.pem")).unwrap(),
        }
    })
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a good token with `scope`; tests override fields to break it.
pub fn claims(scope: &str) -> Value {
    json!({
        "sub": "tester",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 300,
        "scope": scope,
    })
}

pub fn rs256(claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(&keys().rsa_private).unwrap(),
    )
    .unwrap()
}

pub fn es256(claims: &Value) -> String {
    es256_kid(claims, None)
}

pub fn es256_kid(claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(&keys().ec_private).unwrap(),
    )
    .unwrap()
}

pub fn token(scope: &str) -> String {
    rs256(&claims(scope), None)
}

pub fn read_token() -> String {
    token("order:read")
}

pub fn write_token() -> String {
    token("order:write")
}

pub fn all_token() -> String {
    token("order:read order:write")
}

/// A fixture order (`delivery`, `large-amount`, `immediate-minimal`).
pub fn fixture(name: &str) -> NewOrder {
    serde_json::from_str(&order_test_support::fixtures::read(&format!("{name}.json"))).unwrap()
}

/// The fixture with a new id and order number (and optionally store, customer, creation time).
pub fn variant(
    name: &str,
    store: i32,
    customer: Option<&str>,
    created_at: chrono::DateTime<chrono::Utc>,
) -> NewOrder {
    let mut order = fixture(name);
    order.id = Uuid::new_v4();
    order.order_number = format!("T-{}", Uuid::new_v4().simple());
    order.store_number = store;
    order.customer_id = customer.map(str::to_owned);
    order.created_at = Some(created_at);
    order.updated_at = Some(created_at);
    order
}

pub struct TestApp {
    pub db: TestDatabase,
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    /// A server with the RSA public key file as key source.
    pub async fn start() -> Self {
        let db = TestDatabase::new().await;
        let url = db.url().to_owned();
        Self::start_with(
            db,
            &url,
            &[
                "--jwt-public-key-file",
                keys().rsa_public_file.to_str().unwrap(),
            ],
        )
        .await
    }

    /// A server on `database_url` (a proxy, say) with these extra flags.
    pub async fn start_with(db: TestDatabase, database_url: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "order-api",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--db-connect-timeout-ms",
            "2000",
            "--jwt-issuers",
            "https://other.test,https://users.test",
            "--jwt-audience",
            AUDIENCE,
            "--db-query-timeout-ms",
            "5000",
        ];
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args).unwrap();
        let auth = Auth::from_config(&config).await.unwrap();
        let pool = order_store::build_pool(&config.db, "order-api-test");
        let state = AppState::new(pool, auth, Limits::of(&config));
        let (tx, rx) = oneshot::channel::<()>();
        let (addr, server) = order_api::serve(&state, config.listen, async {
            let _ = rx.await;
        })
        .unwrap();
        let server = tokio::spawn(server);
        Self {
            db,
            addr,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub async fn insert(&self, orders: &[NewOrder]) {
        let mut conn = self.db.connection().await;
        let outcomes = orders::insert_if_absent(&mut conn, orders).await.unwrap();
        assert!(
            outcomes.iter().all(|o| *o == InsertOutcome::Inserted),
            "{outcomes:?}"
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
        }
    }
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    v.sort();
    v
}

pub async fn get(app: &TestApp, path: &str, token: Option<&str>) -> Reply {
    send(Method::GET, &app.url(path), token, None, None, &[]).await
}

pub async fn send_json(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Reply {
    send(
        method,
        &app.url(path),
        token,
        Some("application/json"),
        Some(body.to_string().into_bytes()),
        &[],
    )
    .await
}

/// A GraphQL call; returns the HTTP reply.
pub async fn graphql(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> Reply {
    send_json(
        app,
        Method::POST,
        "/graphql",
        token,
        &json!({ "query": query, "variables": variables }),
    )
    .await
}

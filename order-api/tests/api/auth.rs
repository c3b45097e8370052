//! Authentication and authorisation on every route (docs/compatibility.md §5), with keys the test makes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use clap::Parser as _;
use hyper::Method;
use jsonwebtoken::{EncodingKey, Header};
use order_api::auth::{Auth, AuthConfigError};
use order_api::config::Config;
use order_test_support::db::TestDatabase;
use serde_json::{json, Value};
use warp::Filter;

use crate::common::{
    b64url, claims, es256, es256_kid, graphql, keys, now, rs256, send, variant, Reply, TestApp,
    ISSUER,
};

/// One request per route, with the scope it needs and a body that succeeds.
struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    scope: &'static str,
}

async fn cases(app: &TestApp) -> Vec<Case> {
    let orders: Vec<_> = (0..4)
        .map(|_| variant("delivery", 9, Some("cust-auth"), Utc::now()))
        .collect();
    app.insert(&orders).await;
    let id = |i: usize| orders[i].id;
    let read = |path: String| Case {
        method: Method::GET,
        path,
        body: None,
        scope: "order:read",
    };
    let write = |method: Method, path: String, body: Value| Case {
        method,
        path,
        body: Some(body),
        scope: "order:write",
    };
    vec![
        read(format!("/orders/{}", id(0))),
        read(format!("/orders/number/{}", orders[0].order_number)),
        read("/orders/store/9".into()),
        read("/orders/customer/cust-auth".into()),
        read("/orders?storeNumber=9".into()),
        write(
            Method::PATCH,
            format!("/orders/{}/status", id(0)),
            json!({"status": "PROCESSING"}),
        ),
        write(
            Method::PATCH,
            format!("/orders/{}/fulfillment", id(1)),
            json!({"instructions": "x"}),
        ),
        write(
            Method::POST,
            format!("/orders/{}/cancel", id(2)),
            json!({"reason": "test"}),
        ),
        write(
            Method::POST,
            format!("/orders/{}/notes", id(3)),
            json!({"note": "hello"}),
        ),
    ]
}

async fn call(app: &TestApp, case: &Case, token: Option<&str>) -> Reply {
    send(
        case.method.clone(),
        &app.url(&case.path),
        token,
        case.body.as_ref().map(|_| "application/json"),
        case.body.as_ref().map(|b| b.to_string().into_bytes()),
        &[],
    )
    .await
}

fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    )
}

/// Tokens that must all be refused with 401.
fn bad_tokens(scope: &str) -> Vec<(&'static str, String)> {
    let mut expired = claims(scope);
    expired["exp"] = json!(now() - 120);
    let mut early = claims(scope);
    early["nbf"] = json!(now() + 120);
    let mut issuer = claims(scope);
    issuer["iss"] = json!("https://evil.test");
    let mut audience = claims(scope);
    audience["aud"] = json!("another-api");
    let mut no_exp = claims(scope);
    no_exp.as_object_mut().unwrap().remove("exp");
    let wrong_key = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::RS256),
        &claims(scope),
        &EncodingKey::from_rsa_pem(&keys().other_rsa_private).unwrap(),
    )
    .unwrap();
    // HS256 signed with the public key as the secret: the classic confusion attack.
    let hs256 = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(scope),
        &EncodingKey::from_secret(&keys().rsa_public_pem),
    )
    .unwrap();
    let good = rs256(&claims(scope), None);
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut c = claims(scope);
        c["scope"] = json!("order:read order:write admin");
        parts[1] = b64url(c.to_string().as_bytes());
        parts.join(".")
    };
    vec![
        ("expired", rs256(&expired, None)),
        ("not yet valid", rs256(&early, None)),
        ("wrong issuer", rs256(&issuer, None)),
        ("wrong audience", rs256(&audience, None)),
        ("no exp", rs256(&no_exp, None)),
        ("wrong key", wrong_key),
        ("alg none", unsigned(&claims(scope))),
        ("HS256", hs256),
        ("tampered", tampered),
        ("garbage", "not.a.token".into()),
    ]
}

#[tokio::test]
async fn every_route_requires_a_valid_token_and_its_scope() {
    let app = TestApp::start().await;
    for case in cases(&app).await {
        let what = format!("{} {}", case.method, case.path);
        let path = case.path.split('?').next().unwrap().to_owned();
        let body = call(&app, &case, None).await.error(401, &path);
        assert_eq!(body["error"], "Authentication required", "{what}");
        for (name, token) in bad_tokens(case.scope) {
            let reply = call(&app, &case, Some(&token)).await;
            assert_eq!(reply.status, 401, "{what} with {name}: {}", reply.text);
            assert_eq!(reply.json()["error"], "Authentication required");
        }
        let other_scope = if case.scope == "order:read" {
            "order:write"
        } else {
            "order:read"
        };
        let reply = call(&app, &case, Some(&rs256(&claims(other_scope), None))).await;
        let body = reply.error(403, &path);
        assert_eq!(body["error"], "Access denied", "{what}");
        let reply = call(&app, &case, Some(&rs256(&claims(case.scope), None))).await;
        assert_eq!(reply.status, 200, "{what}: {}", reply.text);
    }

    // GraphQL: 401 at HTTP level without a valid token, FORBIDDEN per field without the scope.
    let query = "{ ordersByCustomer(customerId: \"cust-auth\") { id } }";
    let body = graphql(&app, None, query, json!({}))
        .await
        .error(401, "/graphql");
    assert_eq!(body["error"], "Authentication required");
    for (name, token) in bad_tokens("order:read") {
        let reply = graphql(&app, Some(&token), query, json!({})).await;
        assert_eq!(reply.status, 401, "graphql with {name}");
    }
    let reply = graphql(
        &app,
        Some(&rs256(&claims("order:write"), None)),
        query,
        json!({}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["errors"][0]["extensions"]["classification"],
        "FORBIDDEN"
    );
    let reply = graphql(
        &app,
        Some(&rs256(&claims("order:read"), None)),
        query,
        json!({}),
    )
    .await;
    assert_eq!(
        reply.json()["data"]["ordersByCustomer"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // Open routes.
    for path in [
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
        "/graphiql",
    ] {
        let reply = send(Method::GET, &app.url(path), None, None, None, &[]).await;
        assert_eq!(reply.status, 200, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn clock_skew_and_scope_claims() {
    let app = TestApp::start().await;
    let order = variant("delivery", 9, None, Utc::now());
    let path = format!("/orders/{}", order.id);
    app.insert(&[order]).await;
    let status = |token: String| {
        let url = app.url(&path);
        async move {
            send(Method::GET, &url, Some(&token), None, None, &[])
                .await
                .status
                .as_u16()
        }
    };
    let mut c = claims("order:read");
    c["exp"] = json!(now() - 10);
    assert_eq!(
        status(rs256(&c, None)).await,
        200,
        "expired 10 s ago is within the 30 s skew"
    );
    let mut c = claims("order:read");
    c["nbf"] = json!(now() + 10);
    assert_eq!(
        status(rs256(&c, None)).await,
        200,
        "valid in 10 s is within the skew"
    );
    let mut c = claims("");
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!("profile order:read");
    assert_eq!(status(rs256(&c, None)).await, 200, "scp");
    let mut c = claims("");
    c.as_object_mut().unwrap().remove("scope");
    c["scopes"] = json!(["order:read"]);
    assert_eq!(status(rs256(&c, None)).await, 200, "scopes array");
    let mut c = claims("order:read");
    c["aud"] = json!(["other", "reactive-test-api"]);
    assert_eq!(
        status(rs256(&c, None)).await,
        200,
        "aud list containing ours"
    );
    let mut c = claims("order:read");
    c["iss"] = json!("https://other.test");
    assert_eq!(status(rs256(&c, None)).await, 200, "second allowed issuer");
    let c = claims("order:readonly");
    assert_eq!(status(rs256(&c, None)).await, 403, "scopes match exactly");
    assert_eq!(
        status(es256(&claims("order:read"))).await,
        401,
        "ES256 against an RSA key"
    );
    app.stop().await;
}

#[tokio::test]
async fn es256_public_key_file() {
    let db = TestDatabase::new().await;
    let url = db.url().to_owned();
    let file = keys().ec_public_file.to_str().unwrap().to_owned();
    let app = TestApp::start_with(db, &url, &["--jwt-public-key-file", &file]).await;
    let reply = send(
        Method::GET,
        &app.url("/orders?storeNumber=1"),
        Some(&es256(&claims("order:read"))),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = send(
        Method::GET,
        &app.url("/orders?storeNumber=1"),
        Some(&rs256(&claims("order:read"), None)),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 401);
    app.stop().await;
}

#[tokio::test]
async fn jwks_is_fetched_cached_and_refetched_on_unknown_kid() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let kid = Arc::new(std::sync::Mutex::new("k1".to_owned()));
    let jwks = {
        let fetches = fetches.clone();
        let kid = kid.clone();
        warp::path!(".well-known" / "jwks.json").map(move || {
            fetches.fetch_add(1, Ordering::SeqCst);
            let kid = kid.lock().unwrap().clone();
            warp::reply::json(&json!({"keys": [
                {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
                {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": keys().rsa_n, "e": "AQAB"},
                {"kty": "EC", "kid": "e1", "crv": "P-256", "use": "sig", "x": keys().ec_x, "y": keys().ec_y}
            ]}))
        })
    };
    let (jwks_addr, server) = warp::serve(jwks).bind_ephemeral(([127, 0, 0, 1], 0));
    let jwks_server = tokio::spawn(server);
    let jwks_url = format!("http://{jwks_addr}/.well-known/jwks.json");

    let db = TestDatabase::new().await;
    let url = db.url().to_owned();
    let app = TestApp::start_with(db, &url, &["--jwks-url", &jwks_url]).await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "fetched at start");
    let path = "/orders?storeNumber=1";
    let status = |token: String| {
        let url = app.url(path);
        async move {
            send(Method::GET, &url, Some(&token), None, None, &[])
                .await
                .status
                .as_u16()
        }
    };
    assert_eq!(status(rs256(&claims("order:read"), Some("k1"))).await, 200);
    assert_eq!(status(rs256(&claims("order:read"), Some("k1"))).await, 200);
    assert_eq!(
        status(es256_kid(&claims("order:read"), Some("e1"))).await,
        200,
        "ES256 from the JWKS"
    );
    assert_eq!(
        status(es256_kid(&claims("order:read"), Some("k1"))).await,
        401,
        "ES256 under an RSA kid"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "cached");
    // An unknown kid triggers one refetch; more within the interval do not.
    assert_eq!(status(rs256(&claims("order:read"), Some("k2"))).await, 401);
    assert_eq!(status(rs256(&claims("order:read"), Some("k3"))).await, 401);
    assert_eq!(status(rs256(&claims("order:read"), Some("k4"))).await, 401);
    assert!(
        fetches.load(Ordering::SeqCst) <= 2,
        "refetches are rate-limited"
    );
    // Wrong key under a known kid, and the HMAC key of the set, are refused.
    let wrong = jsonwebtoken::encode(
        &{
            let mut h = Header::new(jsonwebtoken::Algorithm::RS256);
            h.kid = Some("k1".into());
            h
        },
        &claims("order:read"),
        &EncodingKey::from_rsa_pem(&keys().other_rsa_private).unwrap(),
    )
    .unwrap();
    assert_eq!(status(wrong).await, 401);
    let hs = jsonwebtoken::encode(
        &{
            let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
            h.kid = Some("hmac".into());
            h
        },
        &claims("order:read"),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert_eq!(status(hs).await, 401);
    // Key rotation: the set now names the key k9; after the refetch interval it is found.
    *kid.lock().unwrap() = "k9".into();
    tokio::time::sleep(order_api::auth::JWKS_MIN_REFRESH + std::time::Duration::from_millis(200))
        .await;
    assert_eq!(status(rs256(&claims("order:read"), Some("k9"))).await, 200);
    app.stop().await;
    jwks_server.abort();
}

#[tokio::test]
async fn without_a_key_source_the_server_refuses_to_start() {
    let parse = |extra: &[&str]| {
        let mut args = vec!["order-api", "--jwt-issuers", ISSUER];
        args.extend_from_slice(extra);
        Config::try_parse_from(args).unwrap()
    };
    match Auth::from_config(&parse(&[])).await {
        Err(AuthConfigError::NoKeySource) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("started without keys"),
    }
    let config = Config::try_parse_from(["order-api", "--jwks-url", "http://x/jwks"]).unwrap();
    assert!(matches!(
        Auth::from_config(&config).await,
        Err(AuthConfigError::NoIssuers)
    ));
    assert!(matches!(
        Auth::from_config(&parse(&["--jwks-url", "ftp://x/jwks"])).await,
        Err(AuthConfigError::JwksUrl(_))
    ));
    assert!(matches!(
        Auth::from_config(&parse(&["--jwt-public-key-file", "/nonexistent.pem"])).await,
        Err(AuthConfigError::KeyFile { .. })
    ));
    assert!(matches!(
        Auth::from_config(&parse(&["--auth-disabled"])).await,
        Ok(Auth::Disabled)
    ));
}

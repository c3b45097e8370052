//! `POST /graphql` as an HTTP request: chunked bodies bounded like REST bodies, and request
//! errors (a document that does not parse or does not validate) answered as the GraphQL
//! specification and graphql-java answer them, without `data` (docs/compatibility.md §4).

use serde_json::{json, Value};

use crate::common::{exchange, graphql, read_token, Reply, TestApp};
use crate::rest::app_with_fixtures;

const DELIVERY_ID: &str = "9b2e4c6a-1f3d-4e8b-a7c5-2d9f1e3b5a70";
/// The test server's `--max-body-bytes` (the default).
const LIMIT: usize = 65_536;

/// `POST /graphql` with `body` sent as `Transfer-Encoding: chunked` in pieces of `piece`
/// bytes, without `Content-Length`, as clients send streamed bodies.
async fn post_chunked(app: &TestApp, token: &str, body: Vec<u8>, piece: usize) -> Reply {
    let (mut sender, streamed) = hyper::Body::channel();
    tokio::spawn(async move {
        for chunk in body.chunks(piece) {
            // The server may answer (413) before the whole body is sent; the rest is dropped.
            if sender
                .send_data(hyper::body::Bytes::copy_from_slice(chunk))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let request = hyper::Request::post(app.url("/graphql"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(streamed)
        .unwrap();
    exchange(request).await
}

/// A GraphQL request body of exactly `size` bytes: the query, then JSON whitespace.
fn padded_request(query: &str, size: usize) -> Vec<u8> {
    let mut body = json!({ "query": query }).to_string().into_bytes();
    assert!(body.len() < size);
    body.resize(size, b' ');
    body
}

#[tokio::test]
async fn a_chunked_graphql_body_is_read_within_the_body_limit() {
    let app = app_with_fixtures().await;
    let token = read_token();
    let query = format!("{{ order(id: \"{DELIVERY_ID}\") {{ id orderNumber }} }}");

    // Within the limit, in many chunks: answered like any other request.
    let reply = post_chunked(&app, &token, padded_request(&query, LIMIT - 1), 4096).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json(),
        json!({"data": {"order": {"id": DELIVERY_ID, "orderNumber": "ORD-42-000187"}}})
    );

    // Over the limit: the same 413 and JSON error body as a REST body over it, whether the
    // length is declared or not.
    let too_big = padded_request(&query, LIMIT + 1);
    let chunked = post_chunked(&app, &token, too_big.clone(), 4096).await;
    let error = chunked.error(413, "/graphql");
    assert_eq!(
        error["message"],
        format!("Request body must be at most {LIMIT} bytes")
    );
    let declared = crate::common::send(
        hyper::Method::POST,
        &app.url("/graphql"),
        Some(&token),
        Some("application/json"),
        Some(too_big),
        &[],
    )
    .await;
    assert_eq!(declared.error(413, "/graphql"), error);
    app.stop().await;
}

/// The whole JSON answer of a GraphQL request that HTTP answered 200.
async fn answer(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let reply = graphql(app, Some(token), query, variables).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

/// Asserts a request error: only `errors`, no `data` key, each error without a path and of
/// `classification`.
fn assert_request_error(answer: &Value, classification: &str) {
    let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["errors"], "{answer}");
    let errors = answer["errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "{answer}");
    for error in errors {
        assert!(error["message"].is_string(), "{answer}");
        assert!(error.get("path").is_none(), "{answer}");
        assert_eq!(
            error["extensions"]["classification"], classification,
            "{answer}"
        );
    }
}

#[tokio::test]
async fn request_errors_have_no_data_and_graphql_java_classifications() {
    let app = app_with_fixtures().await;
    let token = read_token();

    // Syntax errors, however often the text is sent.
    for _ in 0..2 {
        let syntax = answer(&app, &token, "{ order(id: ", json!({})).await;
        assert_request_error(&syntax, "InvalidSyntax");
        assert!(syntax["errors"][0]["locations"].is_array(), "{syntax}");
    }
    // Validation errors: an unknown field, a variable of the wrong type, an unknown
    // operation, a document over the depth limit.
    let unknown_field = answer(&app, &token, "{ nope }", json!({})).await;
    assert_request_error(&unknown_field, "ValidationError");
    // The example of docs/compatibility.md §4, exactly.
    assert_eq!(
        unknown_field,
        json!({"errors": [{"message": "Unknown field \"nope\" on type \"Query\".",
                           "locations": [{"line": 1, "column": 3}],
                           "extensions": {"classification": "ValidationError"}}]})
    );
    let query = "query Order($id: ID!) { order(id: $id) { id } }";
    for _ in 0..2 {
        let wrong_variable = answer(&app, &token, query, json!({ "id": true })).await;
        assert_request_error(&wrong_variable, "ValidationError");
    }
    let reply = crate::common::send_json(
        &app,
        hyper::Method::POST,
        "/graphql",
        Some(&token),
        &json!({ "query": query, "variables": {"id": DELIVERY_ID}, "operationName": "Other" }),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_request_error(&reply.json(), "ValidationError");
    let mut deep = String::from("name");
    for _ in 0..20 {
        deep = format!("ofType {{ {deep} }}");
    }
    let too_deep = format!("{{ __schema {{ types {{ fields {{ type {{ {deep} }} }} }} }} }}");
    assert_request_error(
        &answer(&app, &token, &too_deep, json!({})).await,
        "ValidationError",
    );

    // Field errors are not request errors: execution ran, so `data` is there, with the
    // failing field null, or null itself when a non-null root field failed.
    let field_error = answer(&app, &token, "{ order(id: \"nope\") { id } }", json!({})).await;
    assert_eq!(field_error["data"], json!({"order": null}), "{field_error}");
    assert_eq!(field_error["errors"][0]["path"], json!(["order"]));
    assert_eq!(
        field_error["errors"][0]["extensions"]["classification"],
        "BAD_REQUEST"
    );
    let root_error = answer(&app, &token, "{ orders(storeNumber: 0) { id } }", json!({})).await;
    assert_eq!(root_error.get("data"), Some(&Value::Null), "{root_error}");
    assert_eq!(root_error["errors"][0]["path"], json!(["orders"]));
    app.stop().await;
}

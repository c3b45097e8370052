//! `GET /openapi.json`: the document generated from the routes' annotations states exactly the
//! routes the server answers, the input constraints the handlers enforce (schemathesis generates
//! its requests from them), and the shape of the bodies the server answers with.

use std::collections::{BTreeSet, HashMap, HashSet};

use hyper::Method;
use order_store::{FulfillmentType, OrderStatus, PaymentStatus};
use serde_json::{json, Value};

use crate::common::{get, read_token, send, TestApp};
use crate::rest::app_with_fixtures;

/// The served document, checked to be JSON served as such.
async fn document(app: &TestApp) -> Value {
    let reply = get(app, "/openapi.json", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    reply.json()
}

/// The operation `method` (lower case) of `path`.
fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    op
}

/// The schema of parameter `name` (in `location`) of an operation, `$ref`s followed.
fn parameter<'a>(doc: &'a Value, op: &'a Value, location: &str, name: &str) -> &'a Value {
    let param = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name && p["in"] == location)
        .unwrap_or_else(|| panic!("no {location} parameter {name} in {op}"));
    if location == "path" {
        assert_eq!(param["required"], true, "{param}");
    } else {
        assert_ne!(param["required"], true, "{param}");
    }
    resolve(doc, &param["schema"])
}

/// `schema` with its `$ref` followed, if it is one.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling {reference}"))
        }
        None => schema,
    }
}

/// The JSON request body schema of an operation.
fn body<'a>(doc: &'a Value, op: &'a Value) -> &'a Value {
    assert_eq!(op["requestBody"]["required"], true, "{op}");
    resolve(
        doc,
        &op["requestBody"]["content"]["application/json"]["schema"],
    )
}

/// The documented keys of an object schema.
fn properties(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("not an object schema: {schema}"))
        .keys()
        .cloned()
        .collect()
}

/// The document lists exactly the routes the server answers.
#[tokio::test]
async fn openapi_lists_exactly_the_real_routes() {
    let app = TestApp::start().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"].as_str().unwrap().chars().next(), Some('3'));
    let mut documented = HashSet::new();
    let mut operation_ids = HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.to_uppercase(), path.clone()));
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                operation_ids.insert(id.to_owned()),
                "{method} {path}: id {id:?}"
            );
            // Every `{name}` of the template is a declared path parameter.
            for name in path.split('/').filter_map(|s| s.strip_prefix('{')) {
                parameter(&doc, op, "path", name.trim_end_matches('}'));
            }
        }
    }
    let declared: HashSet<(String, String)> = order_api::routes::ROUTES
        .iter()
        .map(|route| (route.method.to_owned(), route.path.to_owned()))
        .collect();
    assert_eq!(documented, declared);

    // Every documented route is served (not 404/405), and other methods on it get 405.
    let samples: HashMap<&str, &str> = [
        ("{orderId}", "00000000-0000-4000-8000-000000000001"),
        ("{orderNumber}", "N-1"),
        ("{storeNumber}", "1"),
        ("{customerId}", "c-1"),
    ]
    .into_iter()
    .collect();
    for (method, template) in &declared {
        let mut path = template.clone();
        for (placeholder, value) in &samples {
            path = path.replace(placeholder, value);
        }
        let method: Method = method.parse().unwrap();
        let reply = send(
            method.clone(),
            &app.url(&path),
            None,
            Some("application/json"),
            Some(b"{}".to_vec()),
            &[],
        )
        .await;
        assert!(
            reply.status != 404 && reply.status != 405,
            "{method} {path} is documented but answers {}: {}",
            reply.status,
            reply.text
        );
        let other = if method == Method::DELETE {
            Method::PUT
        } else {
            Method::DELETE
        };
        let reply = send(other.clone(), &app.url(&path), None, None, None, &[]).await;
        assert_eq!(reply.status, 405, "{other} {path}");
    }
    app.stop().await;
}

/// The limits the handlers enforce are stated, exactly, so that a client (schemathesis)
/// generating requests from the document only sends ones the server accepts as well formed.
#[tokio::test]
async fn openapi_states_the_enforced_constraints() {
    let app = TestApp::start().await;
    let doc = document(&app).await;
    let store = json!({ "minimum": 1, "maximum": 2000 });
    let int64 =
        |minimum: i64| json!({ "type": "integer", "minimum": minimum, "maximum": i64::MAX });
    let subset = |schema: &Value, expected: &Value| {
        for (key, value) in expected.as_object().unwrap() {
            // Compared as JSON text, so that 9223372036854775807 written as a float fails.
            assert_eq!(
                schema[key].to_string(),
                value.to_string(),
                "{key} of {schema}"
            );
        }
    };

    let by_store = operation(&doc, "get", "/orders/store/{storeNumber}");
    subset(parameter(&doc, by_store, "path", "storeNumber"), &store);
    assert_eq!(
        parameter(&doc, by_store, "path", "storeNumber")["type"],
        "integer"
    );
    let by_customer = operation(&doc, "get", "/orders/customer/{customerId}");
    subset(
        parameter(&doc, by_customer, "path", "customerId"),
        &json!({ "type": "string", "minLength": 1, "maxLength": 100 }),
    );
    for op in [by_store, by_customer] {
        subset(parameter(&doc, op, "query", "limit"), &int64(1));
        subset(parameter(&doc, op, "query", "offset"), &int64(0));
    }
    subset(
        parameter(
            &doc,
            operation(&doc, "get", "/orders/number/{orderNumber}"),
            "path",
            "orderNumber",
        ),
        &json!({ "type": "string", "minLength": 1, "maxLength": 50 }),
    );

    let search = operation(&doc, "get", "/orders");
    subset(parameter(&doc, search, "query", "storeNumber"), &store);
    subset(
        parameter(&doc, search, "query", "customerId"),
        &json!({ "maxLength": 100 }),
    );
    subset(parameter(&doc, search, "query", "page"), &int64(0));
    subset(
        parameter(&doc, search, "query", "size"),
        &json!({ "type": "integer", "minimum": 1, "maximum": 100, "default": 20 }),
    );
    let statuses: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        parameter(&doc, search, "query", "status")["enum"],
        json!(statuses)
    );
    // The consistency token a read accepts: a WAL position, as a change answers it.
    for op in [search, by_store, by_customer] {
        let token = parameter(&doc, op, "header", "X-Consistency-Token");
        assert_eq!(
            token["pattern"], "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$",
            "{token}"
        );
    }
    for name in ["startDate", "endDate"] {
        assert_eq!(
            parameter(&doc, search, "query", name)["format"],
            "date-time"
        );
    }

    for (method, path) in [
        ("get", "/orders/{orderId}"),
        ("patch", "/orders/{orderId}/status"),
        ("patch", "/orders/{orderId}/fulfillment"),
        ("post", "/orders/{orderId}/cancel"),
        ("post", "/orders/{orderId}/notes"),
    ] {
        let id = parameter(&doc, operation(&doc, method, path), "path", "orderId");
        subset(id, &json!({ "type": "string", "format": "uuid" }));
    }

    let status = body(&doc, operation(&doc, "patch", "/orders/{orderId}/status"));
    assert_eq!(status["required"], json!(["status"]));
    assert_eq!(
        resolve(&doc, &status["properties"]["status"])["enum"],
        json!(statuses)
    );
    let fulfillment = body(
        &doc,
        operation(&doc, "patch", "/orders/{orderId}/fulfillment"),
    );
    assert_eq!(fulfillment["minProperties"], 1, "{fulfillment}");
    assert!(fulfillment.get("maxProperties").is_none(), "{fulfillment}");
    assert_eq!(
        properties(fulfillment),
        ["fulfillmentDate", "instructions", "pickupLocation"]
            .map(String::from)
            .into()
    );
    for (path, field) in [
        ("/orders/{orderId}/cancel", "reason"),
        ("/orders/{orderId}/notes", "note"),
    ] {
        let text = body(&doc, operation(&doc, "post", path));
        assert_eq!(text["required"], json!([field]));
        subset(
            &text["properties"][field],
            &json!({ "type": "string", "minLength": 1, "maxLength": 10_000 }),
        );
    }
    let graphql = body(&doc, operation(&doc, "post", "/graphql"));
    assert_eq!(graphql["required"], json!(["query"]));
    assert_eq!(graphql["properties"]["query"]["minLength"], 1);
    app.stop().await;
}

/// Who may call what: reads need `order:read`, changes `order:write`, GraphQL any token, and
/// the operations endpoints none; every error status is documented with the error body.
#[tokio::test]
async fn openapi_states_security_and_error_bodies() {
    let app = TestApp::start().await;
    let doc = document(&app).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"],
        json!({ "type": "http", "scheme": "bearer", "bearerFormat": "JWT (RS256/ES256)" })
    );
    let error = &doc["components"]["schemas"]["Error"];
    let fields = ["error", "message", "path", "status", "traceId", "details"];
    assert_eq!(properties(error), fields.map(String::from).into());
    assert_eq!(error["required"], json!(fields));
    let public = [
        "/graphiql",
        "/openapi.json",
        "/metrics",
        "/health/live",
        "/health/ready",
    ];
    for route in order_api::routes::ROUTES {
        let op = operation(&doc, &route.method.to_lowercase(), route.path);
        let scopes = if route.path == "/graphql" {
            json!([{ "bearerAuth": [] }])
        } else if !route.path.starts_with("/orders") {
            assert!(public.contains(&route.path) || route.path.starts_with("/actuator"));
            // No requirement, or only the empty one: no token needed.
            assert!(
                op["security"] == json!([]) || op["security"] == json!([{}]),
                "{op}"
            );
            continue;
        } else if route.method == "GET" {
            json!([{ "bearerAuth": ["order:read"] }])
        } else {
            json!([{ "bearerAuth": ["order:write"] }])
        };
        assert_eq!(op["security"], scopes, "{} {}", route.method, route.path);
        let mut statuses = vec!["400", "401"];
        if route.path.starts_with("/orders") {
            statuses.extend(["403", "503"]);
        }
        if route.path.starts_with("/orders/{orderId}") || route.path.starts_with("/orders/number") {
            statuses.push("404");
        }
        if route.method != "GET" {
            statuses.extend(["413", "415"]);
        }
        for status in statuses {
            let schema = &op["responses"][status]["content"]["application/json"]["schema"];
            assert_eq!(
                resolve(&doc, schema),
                error,
                "{status} of {} {}",
                route.method,
                route.path
            );
        }
    }
    app.stop().await;
}

/// The order schema (described in order-api, the order serialized by order-store) states
/// exactly the keys an order is answered with, and the enums their values.
#[tokio::test]
async fn openapi_order_schema_matches_the_answered_order() {
    let app = app_with_fixtures().await;
    let doc = document(&app).await;
    let token = read_token();
    let reply = get(
        &app,
        "/orders/9b2e4c6a-1f3d-4e8b-a7c5-2d9f1e3b5a70",
        Some(&token),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let order = reply.json();
    let schema = |name: &str| {
        resolve(
            &doc,
            &json!({ "$ref": format!("#/components/schemas/{name}") }),
        )
        .clone()
    };
    let keys = |value: &Value| {
        value
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    let order_schema = schema("Order");
    assert_eq!(properties(&order_schema), keys(&order));
    for required in order_schema["required"].as_array().unwrap() {
        assert!(
            !order[required.as_str().unwrap()].is_null(),
            "{required} is null"
        );
    }
    let item = &order["lineItems"][0];
    assert_eq!(properties(&schema("LineItem")), keys(item));
    // Enum values compared as sets: their order in the document carries no meaning.
    let values = |schema: Value| -> BTreeSet<String> {
        serde_json::from_value(schema["enum"].clone()).unwrap()
    };
    let names = |all: Vec<&str>| all.into_iter().map(String::from).collect::<BTreeSet<_>>();
    assert_eq!(
        values(schema("OrderStatus")),
        names(OrderStatus::ALL.iter().map(|s| s.as_str()).collect())
    );
    assert_eq!(
        values(schema("FulfillmentType")),
        names(FulfillmentType::ALL.iter().map(|s| s.as_str()).collect())
    );
    assert_eq!(
        values(schema("PaymentStatus")),
        names(PaymentStatus::ALL.iter().map(|s| s.as_str()).collect())
    );
    app.stop().await;
}

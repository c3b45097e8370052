//! Drop-in compatibility with the existing service's clients (docs/compatibility.md): the
//! exact GraphQL schema, the specification's field-error semantics on real client documents,
//! and the existing validators' messages through REST and GraphQL.

use std::collections::BTreeSet;

use async_graphql::parser::types::{BaseType, Type, TypeKind, TypeSystemDefinition};
use hyper::Method;
use serde_json::{json, Value};

use crate::common::{
    all_token, get, graphql, pairs, read_token, send_json, variant, write_token, TestApp,
};
use crate::rest::app_with_fixtures;

const DELIVERY_ID: &str = "9b2e4c6a-1f3d-4e8b-a7c5-2d9f1e3b5a70";

const INTROSPECTION: &str = "
query Schema {
  __schema {
    queryType { name }
    mutationType { name }
    types {
      kind name
      fields { name args { name type { ...T } } type { ...T } }
      inputFields { name type { ...T } }
      enumValues { name }
    }
  }
}
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

fn introspected_type(t: &Value) -> String {
    match t["kind"].as_str().unwrap() {
        "NON_NULL" => format!("{}!", introspected_type(&t["ofType"])),
        "LIST" => format!("[{}]", introspected_type(&t["ofType"])),
        _ => t["name"].as_str().unwrap().to_owned(),
    }
}

fn sdl_type(t: &Type) -> String {
    let base = match &t.base {
        BaseType::Named(name) => name.to_string(),
        BaseType::List(item) => format!("[{}]", sdl_type(item)),
    };
    if t.nullable {
        base
    } else {
        format!("{base}!")
    }
}

/// One line per type, field (with its arguments), input field and enum value.
fn lines_of_introspection(schema: &Value) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    lines.insert(format!("query root {}", schema["queryType"]["name"]));
    lines.insert(format!("mutation root {}", schema["mutationType"]["name"]));
    for ty in schema["types"].as_array().unwrap() {
        let name = ty["name"].as_str().unwrap();
        let kind = ty["kind"].as_str().unwrap();
        if name.starts_with("__") || kind == "SCALAR" {
            continue;
        }
        lines.insert(format!("{kind} {name}"));
        for field in ty["fields"].as_array().into_iter().flatten() {
            let args: Vec<String> = field["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    format!(
                        "{}: {}",
                        a["name"].as_str().unwrap(),
                        introspected_type(&a["type"])
                    )
                })
                .collect();
            lines.insert(format!(
                "{name}.{}({}): {}",
                field["name"].as_str().unwrap(),
                args.join(", "),
                introspected_type(&field["type"])
            ));
        }
        for field in ty["inputFields"].as_array().into_iter().flatten() {
            lines.insert(format!(
                "{name}.{}: {}",
                field["name"].as_str().unwrap(),
                introspected_type(&field["type"])
            ));
        }
        for value in ty["enumValues"].as_array().into_iter().flatten() {
            lines.insert(format!("{name} = {}", value["name"].as_str().unwrap()));
        }
    }
    lines
}

fn lines_of_sdl(sdl: &str) -> BTreeSet<String> {
    let document = async_graphql::parser::parse_schema(sdl).expect("schema.graphql parses");
    let mut lines = BTreeSet::new();
    lines.insert("query root \"Query\"".to_owned());
    lines.insert("mutation root \"Mutation\"".to_owned());
    for definition in document.definitions {
        let TypeSystemDefinition::Type(ty) = definition else {
            continue;
        };
        let name = ty.node.name.node.to_string();
        match &ty.node.kind {
            TypeKind::Object(object) => {
                lines.insert(format!("OBJECT {name}"));
                for field in &object.fields {
                    let args: Vec<String> = field
                        .node
                        .arguments
                        .iter()
                        .map(|a| format!("{}: {}", a.node.name.node, sdl_type(&a.node.ty.node)))
                        .collect();
                    lines.insert(format!(
                        "{name}.{}({}): {}",
                        field.node.name.node,
                        args.join(", "),
                        sdl_type(&field.node.ty.node)
                    ));
                }
            }
            TypeKind::InputObject(input) => {
                lines.insert(format!("INPUT_OBJECT {name}"));
                for field in &input.fields {
                    lines.insert(format!(
                        "{name}.{}: {}",
                        field.node.name.node,
                        sdl_type(&field.node.ty.node)
                    ));
                }
            }
            TypeKind::Enum(values) => {
                lines.insert(format!("ENUM {name}"));
                for value in &values.values {
                    lines.insert(format!("{name} = {}", value.node.value.node));
                }
            }
            other => panic!("schema.graphql has an unexpected kind of type: {other:?}"),
        }
    }
    lines
}

#[tokio::test]
async fn running_schema_equals_the_kept_schema_file() {
    let app = TestApp::start().await;
    let reply = graphql(&app, Some(&read_token()), INTROSPECTION, json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert!(body.get("errors").is_none(), "{body}");
    let running = lines_of_introspection(&body["data"]["__schema"]);
    let kept = lines_of_sdl(include_str!("../../schema.graphql"));
    let missing: Vec<_> = kept.difference(&running).collect();
    let extra: Vec<_> = running.difference(&kept).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "schema.graphql and the running schema differ\nin the file only: {missing:#?}\nserved only: {extra:#?}"
    );
    // The same schema as the library prints it (what `/graphql` introspection reflects).
    assert_eq!(
        lines_of_sdl(&order_api::graphql::schema_sdl()),
        kept,
        "printed SDL differs from schema.graphql"
    );
    app.stop().await;
}

async fn body(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let reply = graphql(app, Some(token), query, variables).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

fn column_of(query: &str, needle: &str) -> usize {
    query.find(needle).unwrap() + 1
}

#[tokio::test]
async fn client_documents_get_the_specifications_field_errors() {
    let app = app_with_fixtures().await;
    let read = read_token();

    // A fragment on the root type, and __typename on the root.
    let query = "query Q($id: ID!) { __typename ...F } fragment F on Query { order(id: $id) { id __typename } }";
    assert_eq!(
        body(&app, &read, query, json!({"id": DELIVERY_ID})).await,
        json!({"data": {"__typename": "Query", "order": {"id": DELIVERY_ID, "__typename": "Order"}}})
    );
    let query = "mutation { __typename }";
    assert_eq!(
        body(&app, &read, query, json!({})).await,
        json!({"data": {"__typename": "Mutation"}})
    );

    // One failing field alone: its key is null, not `data: null`.
    let query = "{ order(id: \"not-a-uuid\") { id } }";
    assert_eq!(
        body(&app, &read, query, json!({})).await,
        json!({
            "data": {"order": null},
            "errors": [{
                "message": "Validation failed",
                "locations": [{"line": 1, "column": column_of(query, "order")}],
                "path": ["order"],
                "extensions": {"classification": "BAD_REQUEST",
                               "validationErrors": {"id": "Must be a valid UUID"}}
            }]
        })
    );

    // Two aliases, one failing: the other keeps its value, the failing one is null.
    let query = format!(
        "{{ good: order(id: \"{DELIVERY_ID}\") {{ orderNumber }} bad: order(id: \" \") {{ orderNumber }} }}"
    );
    assert_eq!(
        body(&app, &read, &query, json!({})).await,
        json!({
            "data": {"good": {"orderNumber": "ORD-42-000187"}, "bad": null},
            "errors": [{
                "message": "Validation failed",
                "locations": [{"line": 1, "column": column_of(&query, "bad:")}],
                "path": ["bad"],
                "extensions": {"classification": "BAD_REQUEST",
                               "validationErrors": {"id": "Required"}}
            }]
        })
    );

    // A field without its scope is FORBIDDEN for that field only.
    let write_only = write_token();
    let query = "{ order(id: \"9b2e4c6a-1f3d-4e8b-a7c5-2d9f1e3b5a70\") { id } }";
    assert_eq!(
        body(&app, &write_only, query, json!({})).await,
        json!({
            "data": {"order": null},
            "errors": [{
                "message": "Access denied",
                "locations": [{"line": 1, "column": 3}],
                "path": ["order"],
                "extensions": {"classification": "FORBIDDEN"}
            }]
        })
    );

    // A non-null root field that fails nulls `data` itself: its nearest nullable parent.
    let query =
        format!("{{ order(id: \"{DELIVERY_ID}\") {{ id }} orders(storeNumber: 0) {{ id }} }}");
    let answer = body(&app, &read, &query, json!({})).await;
    assert_eq!(answer["data"], Value::Null, "{answer}");
    assert_eq!(answer["errors"][0]["path"], json!(["orders"]));
    assert_eq!(
        answer["errors"][0]["extensions"]["validationErrors"],
        json!({"storeNumber": "Must be between 1 and 2000"})
    );

    // Not found on a mutation: NOT_FOUND, the field null.
    let query = "mutation { cancelOrder(id: \"00000000-0000-4000-8000-000000000009\", reason: \"x\") { id } }";
    assert_eq!(
        body(&app, &all_token(), query, json!({})).await,
        json!({
            "data": {"cancelOrder": null},
            "errors": [{
                "message": "Order not found: 00000000-0000-4000-8000-000000000009",
                "locations": [{"line": 1, "column": 12}],
                "path": ["cancelOrder"],
                "extensions": {"classification": "NOT_FOUND"}
            }]
        })
    );
    app.stop().await;
}

#[tokio::test]
async fn a_field_error_inside_a_list_nulls_only_its_nearest_nullable_parent() {
    let app = TestApp::start().await;
    let now = chrono::Utc::now();
    let newer = variant("delivery", 77, Some("c-1"), now);
    // A stored snapshot without the customer id the schema declares non-null.
    let mut older = variant(
        "delivery",
        77,
        Some("c-2"),
        now - chrono::Duration::minutes(1),
    );
    older.customer_snapshot.as_mut().unwrap().customer_id = None;
    app.insert(&[newer.clone(), older.clone()]).await;
    let query =
        "{ orders(storeNumber: 77) { orderNumber customerSnapshot { customerId firstName } } }";
    let answer = body(&app, &read_token(), query, json!({})).await;
    assert_eq!(
        answer["data"],
        json!({"orders": [
            {"orderNumber": newer.order_number, "customerSnapshot": {"customerId": "cust-5521", "firstName": "Ada"}},
            {"orderNumber": older.order_number, "customerSnapshot": null}
        ]})
    );
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{answer}");
    assert_eq!(
        errors[0]["path"],
        json!(["orders", 1, "customerSnapshot", "customerId"])
    );
    assert_eq!(
        errors[0]["locations"],
        json!([{"line": 1, "column": column_of(query, "customerId")}])
    );
    assert_eq!(errors[0]["extensions"]["classification"], "INTERNAL_ERROR");
    app.stop().await;
}

/// Every row of the existing validators' message table, through REST and GraphQL.
#[tokio::test]
async fn validation_messages_match_the_existing_validators() {
    let app = app_with_fixtures().await;
    let (read, all) = (read_token(), all_token());
    let rest = async |method: Method, path: &str, body: Option<Value>| {
        let without_query = path.split('?').next().unwrap();
        match body {
            Some(body) => send_json(&app, method, path, Some(&all), &body)
                .await
                .validation(without_query),
            None => get(&app, path, Some(&read)).await.validation(without_query),
        }
    };
    let gql = async |query: &str| {
        let answer = body(&app, &all, query, json!({})).await;
        assert_eq!(
            answer["errors"][0]["message"], "Validation failed",
            "{answer}"
        );
        answer["errors"][0]["extensions"]["validationErrors"].clone()
    };
    let id = DELIVERY_ID;

    // Ids: blank is Required, garbage is not a UUID.
    assert_eq!(
        rest(Method::GET, "/orders/%20", None).await,
        pairs(&[("orderId", "Required")])
    );
    assert_eq!(
        rest(Method::GET, "/orders/nope", None).await,
        pairs(&[("orderId", "Must be a valid UUID")])
    );
    assert_eq!(
        gql("{ order(id: \"\") { id } }").await,
        json!({"id": "Required"})
    );
    assert_eq!(
        gql("{ order(id: \"nope\") { id } }").await,
        json!({"id": "Must be a valid UUID"})
    );

    // Required strings.
    assert_eq!(
        rest(Method::GET, "/orders/number/%20", None).await,
        pairs(&[("orderNumber", "Required")])
    );
    assert_eq!(
        rest(Method::GET, "/orders/customer/%20", None).await,
        pairs(&[("customerId", "Required")])
    );
    let status_path = format!("/orders/{id}/status");
    assert_eq!(
        rest(Method::PATCH, &status_path, Some(json!({"status": " "}))).await,
        pairs(&[("status", "Required")])
    );
    let cancel_path = format!("/orders/{id}/cancel");
    assert_eq!(
        rest(Method::POST, &cancel_path, Some(json!({"reason": ""}))).await,
        pairs(&[("reason", "Required")])
    );
    let notes_path = format!("/orders/{id}/notes");
    assert_eq!(
        rest(Method::POST, &notes_path, Some(json!({"note": "  "}))).await,
        pairs(&[("note", "Required")])
    );
    assert_eq!(
        gql("{ orderByNumber(orderNumber: \" \") { id } }").await,
        json!({"orderNumber": "Required"})
    );
    assert_eq!(
        gql("{ ordersByCustomer(customerId: \"\") { id } }").await,
        json!({"customerId": "Required"})
    );
    assert_eq!(
        gql(&format!(
            "mutation {{ cancelOrder(id: \"{id}\", reason: \" \") {{ id }} }}"
        ))
        .await,
        json!({"reason": "Required"})
    );
    assert_eq!(
        gql(&format!(
            "mutation {{ addOrderNote(id: \"{id}\", note: \"\") {{ id }} }}"
        ))
        .await,
        json!({"note": "Required"})
    );

    // Store numbers.
    assert_eq!(
        rest(Method::GET, "/orders/store/2001", None).await,
        pairs(&[("storeNumber", "Must be between 1 and 2000")])
    );
    assert_eq!(
        rest(Method::GET, "/orders?storeNumber=0", None).await,
        pairs(&[("storeNumber", "Must be between 1 and 2000")])
    );
    assert_eq!(
        gql("{ orders(storeNumber: 0) { id } }").await,
        json!({"storeNumber": "Must be between 1 and 2000"})
    );

    // Status names.
    assert_eq!(
        rest(Method::GET, "/orders?storeNumber=1&status=LOST", None).await,
        pairs(&[("status", "Invalid status value")])
    );
    assert_eq!(
        rest(Method::PATCH, &status_path, Some(json!({"status": "LOST"}))).await,
        pairs(&[("status", "Invalid status value")])
    );

    // Date range, page size and page: all errors at once.
    assert_eq!(
        rest(
            Method::GET,
            "/orders?storeNumber=1&startDate=2025-02-01T00:00:00Z&endDate=2025-01-01T00:00:00Z&size=0&page=-1",
            None
        )
        .await,
        pairs(&[
            ("dateRange", "Start date must be before end date"),
            ("page", "Must be non-negative"),
            ("size", "Must be between 1 and 100"),
        ])
    );
    assert_eq!(
        gql("{ searchOrders(input: {storeNumber: 1, startDate: \"2025-02-01T00:00:00Z\", endDate: \"2025-01-01T00:00:00Z\", limit: 101, offset: -1}) { totalCount } }").await,
        json!({"dateRange": "Start date must be before end date",
               "limit": "Must be between 1 and 100", "offset": "Must be non-negative"})
    );
    assert_eq!(
        gql("{ orders(storeNumber: 1, limit: 0, offset: -5) { id } }").await,
        json!({"limit": "Must be between 1 and 100", "offset": "Must be non-negative"})
    );

    // updateFulfillment with no field.
    let fulfillment_path = format!("/orders/{id}/fulfillment");
    assert_eq!(
        rest(Method::PATCH, &fulfillment_path, Some(json!({}))).await,
        pairs(&[("input", "At least one field must be provided")])
    );
    assert_eq!(
        gql(&format!(
            "mutation {{ updateFulfillment(id: \"{id}\", input: {{}}) {{ id }} }}"
        ))
        .await,
        json!({"input": "At least one field must be provided"})
    );
    app.stop().await;
}

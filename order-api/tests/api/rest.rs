//! The REST endpoints: shapes, validation, writes, bad input, concurrency, operations.

use std::collections::HashSet;

use chrono::{Duration, TimeZone, Utc};
use hyper::Method;
use order_store::OrderStatus;
use serde_json::{json, Value};

use crate::common::{
    all_token, fixture, get, pairs, read_token, send, send_json, variant, write_token, TestApp,
};

const DELIVERY_ID: &str = "9b2e4c6a-1f3d-4e8b-a7c5-2d9f1e3b5a70";
const PICKUP_ID: &str = "d4f6a8b0-2c4e-4f6a-8b0c-2e4f6a8b0c2e";
const MINIMAL_ID: &str = "3c8a1e5f-7d2b-4f9c-a6e0-1b4d8f2c7a93";

pub async fn app_with_fixtures() -> TestApp {
    let app = TestApp::start().await;
    app.insert(&[
        fixture("delivery"),
        fixture("large-amount"),
        fixture("immediate-minimal"),
    ])
    .await;
    app
}

#[tokio::test]
async fn order_by_id_and_number_have_the_contract_shape() {
    let app = app_with_fixtures().await;
    let token = read_token();
    let reply = get(&app, &format!("/orders/{DELIVERY_ID}"), Some(&token)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // Money as JSON numbers with two decimals, lineTotal computed.
    for fragment in [
        r#""subtotal":59.97"#,
        r#""discountTotal":5.00"#,
        r#""taxTotal":4.40"#,
        r#""grandTotal":67.36"#,
        r#""lineTotal":54.97"#,
        r#""appliedAmount":5.00"#,
        r#""createdAt":"2025-12-13T21:44:36.498213Z""#,
    ] {
        assert!(
            reply.text.contains(fragment),
            "{fragment} in {}",
            reply.text
        );
    }
    let body = reply.json();
    assert_eq!(body["orderNumber"], "ORD-42-000187");
    assert_eq!(body["customerSnapshot"]["email"], "ada.okafor@example.com");
    assert_eq!(
        body["fulfillmentDetails"]["deliveryAddress"]["street2"],
        Value::Null
    );
    assert_eq!(body["sessionId"], "a3f9c2d1-7b6e-4f50-8c21-e4d3b2a1f0c9");
    let expected_keys = [
        "id",
        "storeNumber",
        "orderNumber",
        "customerId",
        "fulfillmentType",
        "fulfillmentDate",
        "reservationId",
        "subtotal",
        "discountTotal",
        "taxTotal",
        "fulfillmentCost",
        "grandTotal",
        "paymentStatus",
        "paymentMethod",
        "paymentReference",
        "status",
        "lineItems",
        "appliedDiscounts",
        "customerSnapshot",
        "fulfillmentDetails",
        "createdAt",
        "updatedAt",
        "createdBy",
        "sessionId",
    ];
    let keys: HashSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, expected_keys.into_iter().collect());

    let reply = get(&app, "/orders/number/ORD-1999-000003", Some(&token)).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.text.contains(r#""subtotal":12345678.00"#),
        "{}",
        reply.text
    );
    assert_eq!(reply.json()["id"], PICKUP_ID);
    assert_eq!(reply.json()["fulfillmentType"], "PICKUP");

    let minimal = get(&app, &format!("/orders/{MINIMAL_ID}"), Some(&token))
        .await
        .json();
    assert_eq!(minimal["customerSnapshot"], Value::Null);
    assert_eq!(minimal["lineItems"][0]["discountAmount"], Value::Null);

    // 404s
    let missing = "00000000-0000-4000-8000-000000000001";
    let path = format!("/orders/{missing}");
    let body = get(&app, &path, Some(&token)).await.error(404, &path);
    assert_eq!(body["message"], format!("Order not found: {missing}"));
    assert_eq!(body["error"], "Not Found");
    let body = get(&app, "/orders/number/NOPE-1", Some(&token))
        .await
        .error(404, "/orders/number/NOPE-1");
    assert_eq!(body["message"], "Order not found: NOPE-1");

    // Validation
    let reply = get(&app, "/orders/not-a-uuid", Some(&token)).await;
    assert_eq!(
        reply.validation("/orders/not-a-uuid"),
        pairs(&[("orderId", "Must be a valid UUID")])
    );
    let long = "N".repeat(51);
    let path = format!("/orders/number/{long}");
    assert_eq!(
        get(&app, &path, Some(&token)).await.validation(&path),
        pairs(&[("orderNumber", "Must be at most 50 characters")])
    );
    let path = "/orders/number/%20%20";
    assert_eq!(
        get(&app, path, Some(&token)).await.validation(path),
        pairs(&[("orderNumber", "Required")])
    );
    app.stop().await;
}

#[tokio::test]
async fn store_and_customer_arrays_stream_every_row_and_page() {
    let app = TestApp::start().await;
    let base = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    // 1,203 orders: more than two streaming chunks of 500, with ties on createdAt.
    let orders: Vec<_> = (0..1203)
        .map(|i| {
            variant(
                "delivery",
                5,
                Some("cust-many"),
                base + Duration::seconds(i / 2),
            )
        })
        .collect();
    app.insert(&orders).await;
    app.insert(&[variant("delivery", 6, Some("cust-other"), base)])
        .await;
    let token = read_token();

    let reply = get(&app, "/orders/store/5", Some(&token)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.headers.get("content-type").unwrap(),
        "application/json"
    );
    // Streamed in chunks, not buffered into one body of known length.
    assert_eq!(reply.headers.get("transfer-encoding").unwrap(), "chunked");
    assert!(reply.headers.get("content-length").is_none());
    let all: Vec<Value> = serde_json::from_str(&reply.text).unwrap();
    assert_eq!(all.len(), 1203);
    let ids: HashSet<&str> = all.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1203, "no duplicates across chunks");
    let created: Vec<&str> = all
        .iter()
        .map(|o| o["createdAt"].as_str().unwrap())
        .collect();
    let mut sorted = created.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(created, sorted, "newest first");

    let page: Vec<Value> = get(&app, "/orders/store/5?limit=700&offset=10", Some(&token))
        .await
        .json()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(page.len(), 700);
    assert_eq!(page[..], all[10..710]);
    let tail: Vec<Value> = serde_json::from_value(
        get(&app, "/orders/store/5?offset=1200", Some(&token))
            .await
            .json(),
    )
    .unwrap();
    assert_eq!(tail[..], all[1200..]);
    let exact: Vec<Value> = serde_json::from_value(
        get(&app, "/orders/store/5?limit=500", Some(&token))
            .await
            .json(),
    )
    .unwrap();
    assert_eq!(exact[..], all[..500]);

    let customer: Vec<Value> = serde_json::from_value(
        get(
            &app,
            "/orders/customer/cust-many?limit=3&offset=1",
            Some(&token),
        )
        .await
        .json(),
    )
    .unwrap();
    assert_eq!(customer[..], all[1..4]);
    let customer = get(&app, "/orders/customer/cust-many", Some(&token))
        .await
        .json();
    assert_eq!(customer.as_array().unwrap().len(), 1203);
    let empty = get(&app, "/orders/store/7", Some(&token)).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.text, "[]");
    assert_eq!(
        get(&app, "/orders/customer/nobody", Some(&token))
            .await
            .text,
        "[]"
    );

    // Validation, all errors at once.
    let path = "/orders/store/0?limit=0&offset=-1";
    assert_eq!(
        get(&app, path, Some(&token))
            .await
            .validation("/orders/store/0"),
        pairs(&[
            ("storeNumber", "Must be between 1 and 2000"),
            ("limit", "Must be positive"),
            ("offset", "Must be non-negative"),
        ])
    );
    assert_eq!(
        get(&app, "/orders/store/abc", Some(&token))
            .await
            .validation("/orders/store/abc"),
        pairs(&[("storeNumber", "Must be between 1 and 2000")])
    );
    assert_eq!(
        get(&app, "/orders/store/2001?limit=x", Some(&token))
            .await
            .validation("/orders/store/2001"),
        pairs(&[
            ("storeNumber", "Must be between 1 and 2000"),
            ("limit", "Must be positive"),
        ])
    );
    let path = "/orders/customer/%20";
    assert_eq!(
        get(&app, path, Some(&token)).await.validation(path),
        pairs(&[("customerId", "Required")])
    );
    app.stop().await;
}

#[tokio::test]
async fn search_honours_every_filter_and_pages() {
    let app = TestApp::start().await;
    let base = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
    let mut orders = Vec::new();
    for i in 0..25 {
        let mut o = variant(
            "delivery",
            11,
            Some(if i % 2 == 0 { "c-even" } else { "c-odd" }),
            base + Duration::days(i),
        );
        o.status = Some(if i % 5 == 0 {
            OrderStatus::Shipped
        } else {
            OrderStatus::Paid
        });
        orders.push(o);
    }
    // Same customer in another store, and a future order (after "now").
    orders.push(variant("delivery", 12, Some("c-even"), base));
    orders.push(variant(
        "delivery",
        11,
        Some("c-even"),
        Utc::now() + Duration::days(30),
    ));
    app.insert(&orders).await;
    let token = read_token();
    let search = |query: String| {
        let app = &app;
        let token = token.clone();
        async move {
            let reply = get(app, &format!("/orders?{query}"), Some(&token)).await;
            assert_eq!(reply.status, 200, "{query}: {}", reply.text);
            reply.json()
        }
    };

    let first = search("storeNumber=11".into()).await;
    assert_eq!(
        first["totalCount"], 25,
        "future orders are after the default endDate (now)"
    );
    assert_eq!(first["page"], 0);
    assert_eq!(first["size"], 20);
    assert_eq!(first["hasMore"], true);
    assert_eq!(first["orders"].as_array().unwrap().len(), 20);
    let newest = base + Duration::days(24);
    assert_eq!(
        first["orders"][0]["createdAt"],
        order_store::models::instant::format(&newest)
    );
    let second = search("storeNumber=11&page=1".into()).await;
    assert_eq!(second["orders"].as_array().unwrap().len(), 5);
    assert_eq!(second["hasMore"], false);

    let shipped = search("storeNumber=11&status=shipped&size=2".into()).await;
    assert_eq!(shipped["totalCount"], 5);
    assert_eq!(shipped["hasMore"], true);
    assert!(shipped["orders"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["status"] == "SHIPPED"));

    let start = order_store::models::instant::format(&(base + Duration::days(3)));
    let end = order_store::models::instant::format(&(base + Duration::days(6)));
    let ranged = search(format!("storeNumber=11&startDate={start}&endDate={end}")).await;
    assert_eq!(ranged["totalCount"], 4, "inclusive bounds");

    // Customer search pages too (docs/compatibility.md §6.5) and spans stores.
    let customer = search("customerId=c-even&size=5&page=1".into()).await;
    assert_eq!(customer["totalCount"], 14, "13 in store 11 + 1 in store 12");
    assert_eq!(customer["orders"].as_array().unwrap().len(), 5);
    assert_eq!(customer["hasMore"], true);
    let both = search("customerId=c-even&storeNumber=12".into()).await;
    assert_eq!(both["totalCount"], 1);

    let nothing = search("status=PAID".into()).await;
    assert_eq!(
        nothing,
        json!({"orders": [], "totalCount": 0, "page": 0, "size": 20, "hasMore": false})
    );

    let path = "/orders?storeNumber=3000&status=bogus&page=-1&size=0&startDate=yesterday";
    assert_eq!(
        get(&app, path, Some(&token)).await.validation("/orders"),
        pairs(&[
            ("page", "Must be non-negative"),
            ("size", "Must be between 1 and 100"),
            ("startDate", "Must be a valid ISO-8601 instant"),
            ("status", "Invalid status value"),
            ("storeNumber", "Must be between 1 and 2000"),
        ])
    );
    let path = format!("/orders?storeNumber=11&startDate={end}&endDate={start}&size=101");
    assert_eq!(
        get(&app, &path, Some(&token)).await.validation("/orders"),
        pairs(&[
            ("dateRange", "Start date must be before end date"),
            ("size", "Must be between 1 and 100"),
        ])
    );
    app.stop().await;
}

#[tokio::test]
async fn writes_update_and_return_the_order() {
    let app = app_with_fixtures().await;
    let token = write_token();
    let t = Some(token.as_str());

    // Status: PAID -> PROCESSING, then an invalid transition.
    let path = format!("/orders/{DELIVERY_ID}/status");
    let reply = send_json(
        &app,
        Method::PATCH,
        &path,
        t,
        &json!({"status": "processing"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let order = reply.json();
    assert_eq!(order["status"], "PROCESSING");
    assert_ne!(order["updatedAt"], "2025-12-13T21:44:36.498213Z");
    let body = send_json(&app, Method::PATCH, &path, t, &json!({"status": "PAID"}))
        .await
        .error(400, &path);
    assert_eq!(
        body["message"],
        "Invalid status transition from PROCESSING to PAID"
    );
    assert_eq!(body["error"], "Bad Request");
    let path_bad = "/orders/xyz/status";
    assert_eq!(
        send_json(&app, Method::PATCH, path_bad, t, &json!({}))
            .await
            .validation(path_bad),
        pairs(&[("orderId", "Must be a valid UUID"), ("status", "Required")])
    );
    assert_eq!(
        send_json(&app, Method::PATCH, &path, t, &json!({"status": "LOST"}))
            .await
            .validation(&path),
        pairs(&[("status", "Invalid status value")])
    );
    assert_eq!(
        send_json(&app, Method::PATCH, &path, t, &json!({"status": 3}))
            .await
            .validation(&path),
        pairs(&[("status", "Invalid status value")])
    );
    let missing = "/orders/00000000-0000-4000-8000-000000000009/status";
    let body = send_json(&app, Method::PATCH, missing, t, &json!({"status": "PAID"}))
        .await
        .error(404, missing);
    assert_eq!(
        body["message"],
        "Order not found: 00000000-0000-4000-8000-000000000009"
    );

    // Fulfillment: creates details on an order without them, merges otherwise.
    let path = format!("/orders/{MINIMAL_ID}/fulfillment");
    let reply = send_json(
        &app,
        Method::PATCH,
        &path,
        t,
        &json!({"fulfillmentDate": "2026-01-02T10:00Z", "pickupLocation": "Counter 3"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let order = reply.json();
    assert_eq!(order["fulfillmentDate"], "2026-01-02T10:00:00Z");
    assert_eq!(
        order["fulfillmentDetails"],
        json!({"type": "IMMEDIATE", "scheduledDate": "2026-01-02T10:00:00Z",
               "deliveryAddress": null, "pickupLocation": "Counter 3", "instructions": null})
    );
    let order = send_json(
        &app,
        Method::PATCH,
        &path,
        t,
        &json!({"instructions": "Ring twice"}),
    )
    .await
    .json();
    assert_eq!(order["fulfillmentDetails"]["pickupLocation"], "Counter 3");
    assert_eq!(order["fulfillmentDetails"]["instructions"], "Ring twice");
    assert_eq!(
        send_json(&app, Method::PATCH, &path, t, &json!({}))
            .await
            .validation(&path),
        pairs(&[("input", "At least one field must be provided")])
    );
    assert_eq!(
        send_json(
            &app,
            Method::PATCH,
            &path,
            t,
            &json!({"fulfillmentDate": "soon", "instructions": 5})
        )
        .await
        .validation(&path),
        pairs(&[
            ("fulfillmentDate", "Must be a valid ISO-8601 instant"),
            ("instructions", "Must be a string"),
        ])
    );

    // Notes append with a newline.
    let path = format!("/orders/{MINIMAL_ID}/notes");
    let order = send_json(&app, Method::POST, &path, t, &json!({"note": "Second"}))
        .await
        .json();
    assert_eq!(
        order["fulfillmentDetails"]["instructions"],
        "Ring twice\nSecond"
    );
    assert_eq!(
        send_json(&app, Method::POST, &path, t, &json!({"note": "  "}))
            .await
            .validation(&path),
        pairs(&[("note", "Required")])
    );

    // Cancel: allowed from PAID, then refused.
    let path = format!("/orders/{PICKUP_ID}/cancel");
    assert_eq!(
        send_json(&app, Method::POST, &path, t, &json!({}))
            .await
            .validation(&path),
        pairs(&[("reason", "Required")])
    );
    let order = send_json(
        &app,
        Method::POST,
        &path,
        t,
        &json!({"reason": "Customer request"}),
    )
    .await
    .json();
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(
        order["fulfillmentDetails"]["instructions"],
        "Cancelled: Customer request"
    );
    let body = send_json(&app, Method::POST, &path, t, &json!({"reason": "again"}))
        .await
        .error(400, &path);
    assert_eq!(body["message"], "Cannot cancel order in status: CANCELLED");
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_get_their_json_4xx() {
    let app = app_with_fixtures().await;
    let token = all_token();
    let t = Some(token.as_str());
    let notes = format!("/orders/{DELIVERY_ID}/notes");

    get(&app, "/nowhere", t).await.error(404, "/nowhere");
    get(&app, "/orders/a/b/c/d", t)
        .await
        .error(404, "/orders/a/b/c/d");
    let path = format!("/orders/{DELIVERY_ID}");
    let reply = send(Method::DELETE, &app.url(&path), t, None, None, &[]).await;
    reply.error(405, &path);
    let reply = send(Method::GET, &app.url(&notes), t, None, None, &[]).await;
    reply.error(405, &notes);

    // Oversized, with and without Content-Length.
    let big = format!(r#"{{"note":"{}"}}"#, "x".repeat(70_000)).into_bytes();
    let reply = send(
        Method::POST,
        &app.url(&notes),
        t,
        Some("application/json"),
        Some(big.clone()),
        &[],
    )
    .await;
    reply.error(413, &notes);
    let (mut sender, body) = hyper::Body::channel();
    tokio::spawn(async move {
        for chunk in big.chunks(8192) {
            if sender
                .send_data(hyper::body::Bytes::copy_from_slice(chunk))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let request = hyper::Request::post(app.url(&notes))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(crate::common::WAIT, hyper::Client::new().request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 413);

    let reply = send(
        Method::POST,
        &app.url(&notes),
        t,
        Some("text/plain"),
        Some(b"{\"note\":\"a\"}".to_vec()),
        &[],
    )
    .await;
    reply.error(415, &notes);
    let reply = send(
        Method::POST,
        &app.url(&notes),
        t,
        None,
        Some(b"{\"note\":\"a\"}".to_vec()),
        &[],
    )
    .await;
    reply.error(415, &notes);
    let reply = send(
        Method::POST,
        &app.url(&notes),
        t,
        Some("application/json"),
        Some(b"{\"note\":".to_vec()),
        &[],
    )
    .await;
    let body = reply.error(400, &notes);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Malformed JSON"),
        "{body}"
    );
    let reply = send(
        Method::POST,
        &app.url(&notes),
        t,
        Some("application/json; charset=utf-8"),
        Some(b"[1,2]".to_vec()),
        &[],
    )
    .await;
    reply.error(400, &notes);
    let reply = send(
        Method::POST,
        &app.url(&notes),
        t,
        Some("application/json"),
        Some(vec![0xff, 0xfe]),
        &[],
    )
    .await;
    reply.error(400, &notes);
    let reply = send(
        Method::POST,
        &app.url("/graphql"),
        t,
        Some("application/json"),
        Some(b"{\"query\":".to_vec()),
        &[],
    )
    .await;
    reply.error(400, "/graphql");
    let reply = send(
        Method::POST,
        &app.url("/graphql"),
        t,
        Some("text/plain"),
        Some(b"{}".to_vec()),
        &[],
    )
    .await;
    reply.error(415, "/graphql");
    // Odd query strings are validation errors, not 500s.
    let reply = get(&app, "/orders?page=%FF&size=1e3&storeNumber=1", t).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    app.stop().await;
}

#[tokio::test]
async fn trace_ids_come_from_traceparent_or_x_request_id() {
    let app = TestApp::start().await;
    let reply = send(
        Method::GET,
        &app.url("/missing"),
        None,
        None,
        None,
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    )
    .await;
    assert_eq!(
        reply.error(404, "/missing")["traceId"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let reply = send(
        Method::GET,
        &app.url("/missing"),
        None,
        None,
        None,
        &[("x-request-id", "req-42")],
    )
    .await;
    assert_eq!(reply.error(404, "/missing")["traceId"], "req-42");
    let reply = get(&app, "/missing", None).await;
    assert_eq!(reply.error(404, "/missing")["traceId"], Value::Null);
    app.stop().await;
}

/// 50 concurrent, conflicting status changes: each that succeeds is a valid step from the one
/// before it, none is lost, none is a 500.
#[tokio::test]
async fn concurrent_status_changes_form_a_valid_path() {
    let app = TestApp::start().await;
    let mut order = variant("delivery", 3, None, Utc::now());
    order.status = Some(OrderStatus::Created);
    let id = order.id;
    app.insert(&[order]).await;
    let token = write_token();
    let targets = [
        "PAID",
        "PROCESSING",
        "SHIPPED",
        "DELIVERED",
        "REFUNDED",
        "CANCELLED",
    ];
    let path = format!("/orders/{id}/status");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let url = app.url(&path);
            let token = token.clone();
            let target = targets[i % targets.len()];
            tokio::spawn(async move {
                let reply = send(
                    Method::PATCH,
                    &url,
                    Some(&token),
                    Some("application/json"),
                    Some(json!({ "status": target }).to_string().into_bytes()),
                    &[],
                )
                .await;
                (target, reply)
            })
        })
        .collect();
    let mut succeeded = Vec::new();
    for task in tasks {
        let (target, reply) = task.await.unwrap();
        match reply.status.as_u16() {
            200 => succeeded.push((
                reply.json()["updatedAt"].as_str().unwrap().to_owned(),
                target,
            )),
            400 => assert!(reply.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid status transition")),
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert!(!succeeded.is_empty());
    // Each status can be entered at most once on any path, and every path visits statuses in
    // this order (CANCELLED ends it), so the successes sorted by it must form a chain.
    let rank = |s: OrderStatus| match s {
        OrderStatus::Created => 0,
        OrderStatus::Paid => 1,
        OrderStatus::Processing => 2,
        OrderStatus::Shipped => 3,
        OrderStatus::Delivered => 4,
        OrderStatus::Refunded => 5,
        OrderStatus::Cancelled => 6,
    };
    let mut path: Vec<OrderStatus> = succeeded.iter().map(|(_, t)| t.parse().unwrap()).collect();
    let distinct: HashSet<OrderStatus> = path.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        path.len(),
        "a status entered twice: {path:?}"
    );
    path.sort_by_key(|s| rank(*s));
    let mut current = OrderStatus::Created;
    for next in &path {
        assert!(current.can_become(*next), "{current} -> {next} in {path:?}");
        current = *next;
    }
    let final_order = get(&app, &format!("/orders/{id}"), Some(&read_token()))
        .await
        .json();
    assert_eq!(final_order["status"], current.as_str());
    app.stop().await;
}

#[tokio::test]
async fn concurrent_notes_are_all_kept() {
    let app = app_with_fixtures().await;
    let token = write_token();
    let path = format!("/orders/{MINIMAL_ID}/notes");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let url = app.url(&path);
            let token = token.clone();
            tokio::spawn(async move {
                send(
                    Method::POST,
                    &url,
                    Some(&token),
                    Some("application/json"),
                    Some(
                        json!({ "note": format!("note-{i}") })
                            .to_string()
                            .into_bytes(),
                    ),
                    &[],
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let order = get(&app, &format!("/orders/{MINIMAL_ID}"), Some(&read_token()))
        .await
        .json();
    let instructions = order["fulfillmentDetails"]["instructions"]
        .as_str()
        .unwrap();
    let mut lines: Vec<&str> = instructions.split('\n').collect();
    lines.sort_unstable();
    let mut expected: Vec<String> = (0..50).map(|i| format!("note-{i}")).collect();
    expected.sort();
    assert_eq!(lines, expected);
    app.stop().await;
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let app = TestApp::start().await;
    let live = get(&app, "/health/live", None).await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "UP");
    let ready = get(&app, "/health/ready", None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let _ = get(
        &app,
        "/orders/00000000-0000-4000-8000-000000000001",
        Some(&read_token()),
    )
    .await;
    let metrics = get(&app, "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    for needle in [
        // Labels in the crate's order: by name.
        r#"http_requests_total{method="GET",route="/orders/{orderId}",status="404"} 1"#,
        r#"http_request_duration_seconds_bucket{method="GET",route="/health/ready",status="200",le="0.001"} "#,
        r#"http_request_duration_seconds_bucket{method="GET",route="/health/ready",status="200",le="1"} 1"#,
        r#"http_request_duration_seconds_bucket{method="GET",route="/health/ready",status="200",le="+Inf"} 1"#,
        r#"db_pool_connections{state="in_use"}"#,
        r#"db_pool_connections{state="idle"}"#,
        "# TYPE db_pool_wait_seconds_total counter\ndb_pool_wait_seconds_total ",
        r#"db_pool_gets_total{outcome="direct"} "#,
        r#"db_pool_gets_total{outcome="waited"} "#,
        r#"db_pool_gets_total{outcome="timed_out"} 0"#,
    ] {
        assert!(
            metrics.text.contains(needle),
            "{needle} in\n{}",
            metrics.text
        );
    }
    // The build: this crate's version, and the commit when GIT_SHA was set at build time.
    let version = format!(r#",version="{}"}} 1"#, env!("CARGO_PKG_VERSION"));
    assert!(
        metrics.text.lines().any(|l| {
            l.starts_with(r#"order_service_build_info{git_sha=""#) && l.ends_with(&version)
        }),
        "build info in\n{}",
        metrics.text
    );
    let graphiql = get(&app, "/graphiql", None).await;
    assert_eq!(graphiql.status, 200);
    assert!(graphiql.text.to_lowercase().contains("graphiql"));
    app.stop().await;
}

/// PostgreSQL text cannot hold U+0000, so a NUL byte in a path segment, query parameter, body
/// field or GraphQL argument must never reach a query (where it would fail as a 500): it is a
/// 400 naming the field, and nothing is written.
#[tokio::test]
async fn nul_characters_are_a_400_not_a_500() {
    let app = app_with_fixtures().await;
    let token = all_token();
    let t = Some(token.as_str());
    let nul = "NUL (U+0000)";
    for path in [
        "/orders/number/ORD%00-1",
        "/orders/customer/cust%00",
        "/orders?storeNumber=42&customerId=a%00b",
        "/orders?customerId=%00x",
    ] {
        let reply = get(&app, path, t).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text);
        assert!(reply.text.contains(nul), "{path}: {}", reply.text);
    }
    let before = get(&app, &format!("/orders/{DELIVERY_ID}"), t).await.json();
    for (method, route, body) in [
        (Method::POST, "notes", json!({"note": "left\u{0}at door"})),
        (Method::POST, "cancel", json!({"reason": "\u{0}"})),
        (
            Method::PATCH,
            "fulfillment",
            json!({"pickupLocation": "desk\u{0}"}),
        ),
        (
            Method::PATCH,
            "fulfillment",
            json!({"instructions": "ring\u{0}twice"}),
        ),
    ] {
        let path = format!("/orders/{DELIVERY_ID}/{route}");
        let reply = send_json(&app, method, &path, t, &body).await;
        let errors = reply.validation(&path);
        assert!(errors.iter().any(|(_, m)| m.contains(nul)), "{errors:?}");
    }
    let after = get(&app, &format!("/orders/{DELIVERY_ID}"), t).await.json();
    assert_eq!(before, after, "nothing was written");
    for (query, variables) in [
        (
            "query($n: String!) { orderByNumber(orderNumber: $n) { id } }",
            json!({"n": "ORD\u{0}"}),
        ),
        (
            "query($c: String!) { ordersByCustomer(customerId: $c) { id } }",
            json!({"c": "c\u{0}"}),
        ),
        (
            "mutation($id: ID!) { addOrderNote(id: $id, note: \"a\\u0000b\") { id } }",
            json!({"id": DELIVERY_ID}),
        ),
        (
            "mutation($id: ID!) { updateFulfillment(id: $id, input: {instructions: \"x\\u0000\"}) { id } }",
            json!({"id": DELIVERY_ID}),
        ),
    ] {
        let reply = crate::common::graphql(&app, t, query, variables).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(reply.text.contains("BAD_REQUEST"), "{query}: {}", reply.text);
        assert!(!reply.text.contains("INTERNAL_ERROR"), "{}", reply.text);
    }
}

/// A 405 carries `Allow` with the methods the resource does answer (RFC 9110 15.5.6).
#[tokio::test]
async fn method_not_allowed_lists_the_allowed_methods() {
    let app = app_with_fixtures().await;
    let token = all_token();
    let t = Some(token.as_str());
    let order = format!("/orders/{DELIVERY_ID}");
    let status = format!("/orders/{DELIVERY_ID}/status");
    let notes = format!("/orders/{DELIVERY_ID}/notes");
    for (method, path, allow) in [
        (Method::DELETE, order.as_str(), "GET"),
        (Method::TRACE, "/graphql", "POST"),
        (Method::PUT, "/health/live", "GET"),
        (Method::POST, status.as_str(), "PATCH"),
        (Method::GET, notes.as_str(), "POST"),
        (Method::DELETE, "/orders", "GET"),
    ] {
        let reply = send(method.clone(), &app.url(path), t, None, None, &[]).await;
        reply.error(405, path);
        assert_eq!(
            reply.headers.get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
    }
}

//! The GraphQL API of docs/compatibility.md §4 and the fixed defects of docs/compatibility.md §6.

use chrono::{Duration, TimeZone, Utc};
use order_store::OrderStatus;
use serde_json::{json, Value};

use crate::common::{all_token, graphql, read_token, variant, write_token, TestApp};
use crate::rest::app_with_fixtures;

const DELIVERY_ID: &str = "9b2e4c6a-1f3d-4e8b-a7c5-2d9f1e3b5a70";
const PICKUP_ID: &str = "d4f6a8b0-2c4e-4f6a-8b0c-2e4f6a8b0c2e";
const MINIMAL_ID: &str = "3c8a1e5f-7d2b-4f9c-a6e0-1b4d8f2c7a93";

const ORDER_FIELDS: &str = "id storeNumber orderNumber customerId fulfillmentType fulfillmentDate
  subtotal discountTotal taxTotal fulfillmentCost grandTotal paymentStatus status
  lineItems { productId sku name quantity unitPrice lineTotal discountAmount }
  appliedDiscounts { discountId discountCode description discountType amount }
  customerSnapshot { customerId firstName lastName email phone loyaltyTier }
  fulfillmentDetails { type scheduledDate pickupLocation instructions
    deliveryAddress { street1 street2 city state postalCode country } }
  createdAt updatedAt";

/// `data` of a successful GraphQL response.
async fn data(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let reply = graphql(app, Some(token), query, variables).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

/// The first error of a GraphQL response.
async fn error(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let reply = graphql(app, Some(token), query, variables).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    body["errors"][0].clone()
}

#[tokio::test]
async fn order_queries_resolve_every_field() {
    let app = app_with_fixtures().await;
    let token = read_token();
    let query = format!("query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}");
    let order = data(&app, &token, &query, json!({"id": DELIVERY_ID})).await["order"].clone();
    assert_eq!(
        order,
        json!({
            "id": DELIVERY_ID, "storeNumber": 42, "orderNumber": "ORD-42-000187",
            "customerId": "cust-5521", "fulfillmentType": "DELIVERY",
            "fulfillmentDate": "2025-12-15T18:00:00Z",
            "subtotal": "59.97", "discountTotal": "5.00", "taxTotal": "4.40",
            "fulfillmentCost": "7.99", "grandTotal": "67.36",
            "paymentStatus": "COMPLETED", "status": "PAID",
            "lineItems": [{"productId": "prod-100", "sku": "SKU-100-BLU", "name": "Trail Mug, blue",
                           "quantity": 3, "unitPrice": "19.99", "lineTotal": "54.97",
                           "discountAmount": "5.00"}],
            "appliedDiscounts": [{"discountId": "disc-9", "discountCode": "WINTER5",
                                  "description": "$5 off mugs", "discountType": "FIXED_AMOUNT",
                                  "amount": "5.00"}],
            "customerSnapshot": {"customerId": "cust-5521", "firstName": "Ada", "lastName": "Okafor",
                                 "email": "ada.okafor@example.com", "phone": "+1-555-0142",
                                 "loyaltyTier": "GOLD"},
            "fulfillmentDetails": {"type": "DELIVERY", "scheduledDate": "2025-12-15T18:00:00Z",
                                   "pickupLocation": null, "instructions": "Leave at side door",
                                   "deliveryAddress": {"street1": "12 Harbor Rd", "street2": null,
                                     "city": "Portland", "state": "ME", "postalCode": "04101",
                                     "country": "US"}},
            "createdAt": "2025-12-13T21:44:36.498213Z", "updatedAt": "2025-12-13T21:44:36.498213Z"
        })
    );

    // A PICKUP order resolves (docs/compatibility.md §6.4), with a discount that has no code.
    let query =
        format!("query($n: String!) {{ orderByNumber(orderNumber: $n) {{ {ORDER_FIELDS} }} }}");
    let pickup =
        data(&app, &token, &query, json!({"n": "ORD-1999-000003"})).await["orderByNumber"].clone();
    assert_eq!(pickup["id"], PICKUP_ID);
    assert_eq!(pickup["fulfillmentType"], "PICKUP");
    assert_eq!(pickup["fulfillmentDetails"]["type"], "PICKUP");
    assert_eq!(pickup["subtotal"], "12345678.00");
    assert_eq!(pickup["grandTotal"], "22222221.23");
    assert_eq!(
        pickup["appliedDiscounts"],
        json!([{"discountId": "d-b2b", "discountCode": null, "description": "Contract price",
                "discountType": "CONTRACT", "amount": "123456.78"}])
    );
    let minimal = data(
        &app,
        &token,
        &format!("{{ order(id: \"{MINIMAL_ID}\") {{ {ORDER_FIELDS} }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(minimal["order"]["customerSnapshot"], Value::Null);
    assert_eq!(minimal["order"]["fulfillmentDetails"], Value::Null);
    assert_eq!(
        minimal["order"]["lineItems"][0]["discountAmount"],
        Value::Null
    );

    // Absent: null. Invalid id: a validation error.
    let absent = data(&app, &token, "{ order(id: \"00000000-0000-4000-8000-000000000001\") { id } orderByNumber(orderNumber: \"NOPE\") { id } }", json!({})).await;
    assert_eq!(absent, json!({"order": null, "orderByNumber": null}));
    let e = error(&app, &token, "{ order(id: \"nope\") { id } }", json!({})).await;
    assert_eq!(e["message"], "Validation failed");
    assert_eq!(e["extensions"]["classification"], "BAD_REQUEST");
    assert_eq!(
        e["extensions"]["validationErrors"],
        json!({"id": "Must be a valid UUID"})
    );
    let e = error(
        &app,
        &token,
        "{ orderByNumber(orderNumber: \" \") { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        e["extensions"]["validationErrors"],
        json!({"orderNumber": "Required"})
    );
    app.stop().await;
}

#[tokio::test]
async fn list_queries_filter_and_page() {
    let app = TestApp::start().await;
    let base = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
    let mut orders = Vec::new();
    for i in 0..30 {
        let mut o = variant(
            if i % 3 == 0 {
                "large-amount"
            } else {
                "delivery"
            },
            21,
            Some(if i < 10 { "gq-a" } else { "gq-b" }),
            base + Duration::hours(i),
        );
        o.status = Some(if i % 2 == 0 {
            OrderStatus::Paid
        } else {
            OrderStatus::Processing
        });
        orders.push(o);
    }
    app.insert(&orders).await;
    let token = read_token();

    // orders(status:) pages (docs/compatibility.md §6.5).
    let page = data(&app, &token, "{ orders(storeNumber: 21, status: PAID, limit: 4, offset: 2) { orderNumber status createdAt } }", json!({})).await;
    let list = page["orders"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert!(list.iter().all(|o| o["status"] == "PAID"));
    let mut paid: Vec<_> = orders
        .iter()
        .filter(|o| o.status == Some(OrderStatus::Paid))
        .collect();
    paid.sort_by_key(|o| std::cmp::Reverse(o.created_at));
    let expected: Vec<&str> = paid[2..6].iter().map(|o| o.order_number.as_str()).collect();
    let got: Vec<&str> = list
        .iter()
        .map(|o| o["orderNumber"].as_str().unwrap())
        .collect();
    assert_eq!(got, expected);
    let default = data(
        &app,
        &token,
        "{ orders(storeNumber: 21) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(default["orders"].as_array().unwrap().len(), 30);
    let e = error(
        &app,
        &token,
        "{ orders(storeNumber: 0, limit: 101, offset: -1) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        e["extensions"]["validationErrors"],
        json!({"storeNumber": "Must be between 1 and 2000", "limit": "Must be between 1 and 100",
               "offset": "Must be non-negative"})
    );

    let by_customer = data(
        &app,
        &token,
        "{ ordersByCustomer(customerId: \"gq-a\") { customerId fulfillmentType } }",
        json!({}),
    )
    .await;
    let list = by_customer["ordersByCustomer"].as_array().unwrap();
    assert_eq!(list.len(), 10);
    assert!(list.iter().any(|o| o["fulfillmentType"] == "PICKUP"));
    let e = error(
        &app,
        &token,
        "{ ordersByCustomer(customerId: \"\") { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        e["extensions"]["validationErrors"],
        json!({"customerId": "Required"})
    );

    // searchOrders honours customerId and status (docs/compatibility.md §6.5).
    let query = "query($input: OrderSearchInput!) { searchOrders(input: $input) { totalCount hasMore orders { customerId status } } }";
    let result = data(&app, &token, query, json!({"input": {"storeNumber": 21, "customerId": "gq-b", "status": "PROCESSING", "limit": 3, "offset": 3}})).await["searchOrders"].clone();
    assert_eq!(result["totalCount"], 10);
    assert_eq!(result["hasMore"], true, "page 1 of size 3: 6 < 10");
    let list = result["orders"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list
        .iter()
        .all(|o| o["customerId"] == "gq-b" && o["status"] == "PROCESSING"));
    let final_page = data(&app, &token, query, json!({"input": {"storeNumber": 21, "customerId": "gq-b", "status": "PROCESSING", "limit": 3, "offset": 9}})).await;
    assert_eq!(final_page["searchOrders"]["hasMore"], false);
    assert_eq!(
        final_page["searchOrders"]["orders"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let dated = data(&app, &token, query, json!({"input": {"storeNumber": 21, "startDate": "2025-06-01T02:00:00Z", "endDate": "2025-06-01T05:00Z"}})).await;
    assert_eq!(dated["searchOrders"]["totalCount"], 4);
    let e = error(&app, &token, query, json!({"input": {"storeNumber": 5000, "startDate": "2025-06-02T00:00:00Z", "endDate": "2025-06-01T00:00:00Z", "limit": 0}})).await;
    assert_eq!(e["message"], "Validation failed");
    assert_eq!(
        e["extensions"]["validationErrors"],
        json!({"storeNumber": "Must be between 1 and 2000", "dateRange": "Start date must be before end date",
               "limit": "Must be between 1 and 100"})
    );
    let e = error(
        &app,
        &token,
        query,
        json!({"input": {"storeNumber": 21, "startDate": "June"}}),
    )
    .await;
    assert_eq!(
        e["extensions"]["validationErrors"],
        json!({"startDate": "Must be a valid ISO-8601 instant"})
    );
    app.stop().await;
}

#[tokio::test]
async fn mutations_apply_the_rules() {
    let app = app_with_fixtures().await;
    let token = write_token();
    let mutation = "mutation($id: ID!, $s: OrderStatus!) { updateOrderStatus(id: $id, status: $s) { status updatedAt } }";
    let updated = data(
        &app,
        &token,
        mutation,
        json!({"id": DELIVERY_ID, "s": "PROCESSING"}),
    )
    .await;
    assert_eq!(updated["updateOrderStatus"]["status"], "PROCESSING");
    assert_ne!(
        updated["updateOrderStatus"]["updatedAt"],
        "2025-12-13T21:44:36.498213Z"
    );
    let e = error(
        &app,
        &token,
        mutation,
        json!({"id": DELIVERY_ID, "s": "CREATED"}),
    )
    .await;
    assert_eq!(
        e["message"],
        "Invalid status transition from PROCESSING to CREATED"
    );
    assert_eq!(e["extensions"]["classification"], "BAD_REQUEST");
    let e = error(
        &app,
        &token,
        mutation,
        json!({"id": "00000000-0000-4000-8000-000000000001", "s": "PAID"}),
    )
    .await;
    assert_eq!(e["extensions"]["classification"], "NOT_FOUND");
    assert_eq!(
        e["message"],
        "Order not found: 00000000-0000-4000-8000-000000000001"
    );
    let e = error(&app, &token, mutation, json!({"id": "x", "s": "PAID"})).await;
    assert_eq!(
        e["extensions"]["validationErrors"],
        json!({"id": "Must be a valid UUID"})
    );

    let fulfil = "mutation($id: ID!, $in: UpdateFulfillmentInput!) { updateFulfillment(id: $id, input: $in) { fulfillmentDate fulfillmentDetails { type scheduledDate pickupLocation instructions } } }";
    let r = data(&app, &token, fulfil, json!({"id": MINIMAL_ID, "in": {"pickupLocation": "Dock 9", "fulfillmentDate": "2026-02-01T08:30:00Z"}})).await;
    assert_eq!(
        r["updateFulfillment"],
        json!({"fulfillmentDate": "2026-02-01T08:30:00Z", "fulfillmentDetails": {"type": "IMMEDIATE",
               "scheduledDate": "2026-02-01T08:30:00Z", "pickupLocation": "Dock 9", "instructions": null}})
    );
    let e = error(&app, &token, fulfil, json!({"id": MINIMAL_ID, "in": {}})).await;
    assert_eq!(
        e["extensions"]["validationErrors"],
        json!({"input": "At least one field must be provided"})
    );
    let e = error(
        &app,
        &token,
        fulfil,
        json!({"id": "bad", "in": {"fulfillmentDate": "later"}}),
    )
    .await;
    assert_eq!(
        e["extensions"]["validationErrors"],
        json!({"id": "Must be a valid UUID", "fulfillmentDate": "Must be a valid ISO-8601 instant"})
    );

    let note = "mutation($id: ID!, $n: String!) { addOrderNote(id: $id, note: $n) { fulfillmentDetails { instructions } } }";
    let r = data(
        &app,
        &token,
        note,
        json!({"id": DELIVERY_ID, "n": "Call first"}),
    )
    .await;
    assert_eq!(
        r["addOrderNote"]["fulfillmentDetails"]["instructions"],
        "Leave at side door\nCall first"
    );
    let e = error(&app, &token, note, json!({"id": DELIVERY_ID, "n": ""})).await;
    assert_eq!(
        e["extensions"]["validationErrors"],
        json!({"note": "Required"})
    );

    let cancel = "mutation($id: ID!, $r: String!) { cancelOrder(id: $id, reason: $r) { status } }";
    let e = error(&app, &token, cancel, json!({"id": PICKUP_ID, "r": " "})).await;
    assert_eq!(
        e["extensions"]["validationErrors"],
        json!({"reason": "Required"})
    );
    let r = data(
        &app,
        &token,
        cancel,
        json!({"id": PICKUP_ID, "r": "Duplicate"}),
    )
    .await;
    assert_eq!(r["cancelOrder"]["status"], "CANCELLED");
    let e = error(&app, &token, cancel, json!({"id": PICKUP_ID, "r": "Again"})).await;
    assert_eq!(e["message"], "Cannot cancel order in status: CANCELLED");
    assert_eq!(e["extensions"]["classification"], "BAD_REQUEST");

    // Scopes per operation.
    let e = error(
        &app,
        &read_token(),
        cancel,
        json!({"id": DELIVERY_ID, "r": "x"}),
    )
    .await;
    assert_eq!(e["extensions"]["classification"], "FORBIDDEN");
    assert_eq!(e["message"], "Access denied");
    let e = error(
        &app,
        &token,
        "{ order(id: \"9b2e4c6a-1f3d-4e8b-a7c5-2d9f1e3b5a70\") { id } }",
        json!({}),
    )
    .await;
    assert_eq!(e["extensions"]["classification"], "FORBIDDEN");
    let both = data(
        &app,
        &all_token(),
        "{ order(id: \"9b2e4c6a-1f3d-4e8b-a7c5-2d9f1e3b5a70\") { status } }",
        json!({}),
    )
    .await;
    assert_eq!(both["order"]["status"], "PROCESSING");
    app.stop().await;
}

#[tokio::test]
async fn depth_and_complexity_are_limited() {
    let app = TestApp::start().await;
    let token = read_token();
    let mut deep = String::from("name");
    for _ in 0..20 {
        deep = format!("ofType {{ {deep} }}");
    }
    let query = format!("{{ __schema {{ types {{ fields {{ type {{ {deep} }} }} }} }} }}");
    let reply = graphql(&app, Some(&token), &query, json!({})).await;
    let body = reply.json();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"))
            .contains("nested too deep"),
        "{body}"
    );
    let fields: Vec<String> = (0..600)
        .map(|i| format!("a{i}: orderByNumber(orderNumber: \"N\") {{ id }}"))
        .collect();
    let query = format!("{{ {} }}", fields.join(" "));
    let body = graphql(&app, Some(&token), &query, json!({})).await.json();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too complex"),
        "{body}"
    );
    // Syntax errors and unknown fields are GraphQL errors, not HTTP failures.
    let reply = graphql(&app, Some(&token), "{ order(", json!({})).await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["errors"].is_array());
    let reply = graphql(&app, Some(&token), "{ nope }", json!({})).await;
    assert_eq!(
        reply.json()["errors"][0]["extensions"]["classification"],
        "ValidationError"
    );
    // GraphiQL's introspection fits within the limits.
    let introspection = "query { __schema { queryType { name } types { kind name fields(includeDeprecated: true) { name args { name type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } } type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } } } } }";
    let body = graphql(&app, Some(&token), introspection, json!({}))
        .await
        .json();
    assert!(body.get("errors").is_none(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().unwrap();
    let fulfillment = types
        .iter()
        .find(|t| t["name"] == "FulfillmentType")
        .unwrap();
    assert_eq!(fulfillment["kind"], "ENUM");
    app.stop().await;
}

#[tokio::test]
async fn repeated_query_texts_are_answered_from_their_parsed_document_correctly() {
    let app = app_with_fixtures().await;
    let token = read_token();
    let query = "query($id: ID!) { order(id: $id) { id orderNumber } }";
    // The same text with other variables, many times: the cached document must not carry
    // anything of an earlier request.
    for id in [DELIVERY_ID, PICKUP_ID, MINIMAL_ID, DELIVERY_ID] {
        let order = data(&app, &token, query, json!({ "id": id })).await["order"].clone();
        assert_eq!(order["id"], id);
    }
    // A text that does not parse is still a GraphQL error, however often it is sent.
    for _ in 0..2 {
        let error = error(&app, &token, "{ order(id: ", json!({})).await;
        assert_eq!(
            error["extensions"]["classification"], "InvalidSyntax",
            "{error}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn validation_is_cached_only_for_valid_documents() {
    let app = app_with_fixtures().await;
    let token = read_token();
    // Over the limits: refused on every repetition, never answered from a cache.
    let mut deep = String::from("name");
    for _ in 0..20 {
        deep = format!("ofType {{ {deep} }}");
    }
    let too_deep = format!("{{ __schema {{ types {{ fields {{ type {{ {deep} }} }} }} }} }}");
    let fields: Vec<String> = (0..600)
        .map(|i| format!("a{i}: orderByNumber(orderNumber: $n) {{ id }}"))
        .collect();
    let too_complex = format!("query($n: String!) {{ {} }}", fields.join(" "));
    for _ in 0..3 {
        let refusal = error(&app, &token, &too_deep, json!({})).await;
        assert!(
            refusal["message"]
                .as_str()
                .is_some_and(|m| m.contains("nested too deep")),
            "{refusal}"
        );
        let refusal = error(&app, &token, &too_complex, json!({ "n": "N" })).await;
        assert!(
            refusal["message"]
                .as_str()
                .is_some_and(|m| m.contains("too complex")),
            "{refusal}"
        );
    }
    // A valid document, validated once, still answers each request's own variables...
    let query = format!("query Order($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}");
    for id in [DELIVERY_ID, PICKUP_ID, MINIMAL_ID, PICKUP_ID] {
        let order = data(&app, &token, &query, json!({ "id": id })).await["order"].clone();
        assert_eq!(order["id"], id);
    }
    let order = data(
        &app,
        &token,
        &query,
        json!({ "id": "00000000-0000-4000-8000-000000000000" }),
    )
    .await;
    assert_eq!(order["order"], Value::Null);
    // ...and variables of the wrong kind are still reported as validation errors, every time.
    for _ in 0..2 {
        let reply = graphql(&app, Some(&token), &query, json!({ "id": true })).await;
        let body = reply.json();
        assert!(body["errors"].is_array(), "{body}");
        assert!(body.get("data").is_none(), "{body}");
        let reply = graphql(&app, Some(&token), &query, json!({})).await;
        assert!(reply.json()["errors"].is_array());
    }
    // Variables of other types are part of the key as they are: an invalid value after a
    // valid one is still refused.
    let query = "query($s: Int!, $st: OrderStatus) { orders(storeNumber: $s, status: $st) { id } }";
    for (store, status) in [(21, "PAID"), (22, "PAID"), (21, "CREATED")] {
        let variables = json!({ "s": store, "st": status });
        data(&app, &token, query, variables).await;
    }
    for variables in [
        json!({ "s": "x", "st": "PAID" }),
        json!({ "s": 21, "st": "NOPE" }),
    ] {
        let reply = graphql(&app, Some(&token), query, variables).await;
        assert!(reply.json()["errors"].is_array(), "{}", reply.text);
    }
    app.stop().await;
}

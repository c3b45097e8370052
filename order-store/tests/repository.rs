//! The repository against a real PostgreSQL: one fresh database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::str::FromStr;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Duration, Utc};
use order_store::models::instant;
use order_store::orders::{
    self, Cursor, FulfillmentUpdate, InsertOutcome, OrderFilter, RejectionKind,
};
use order_store::{NewOrder, OrderStatus, StoreError};
use order_test_support::db::TestDatabase;
use order_test_support::orders::sample_order;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    serde_json::from_str(&order_test_support::fixtures::read(name)).unwrap()
}

const ORDER_FIXTURES: [&str; 3] = [
    "order-completed-delivery.json",
    "order-completed-immediate-minimal.json",
    "order-completed-large-amount.json",
];

/// Whether `actual` says the same as `expected`: numbers equal as decimals (`5.0` = `5.00`),
/// strings that are instants equal as instants, everything else equal, every expected field
/// present.
fn assert_same(expected: &Value, actual: &Value, path: &str) {
    match (expected, actual) {
        (Value::Number(e), Value::Number(a)) => {
            let e = BigDecimal::from_str(&e.to_string()).unwrap();
            let a = BigDecimal::from_str(&a.to_string()).unwrap();
            assert_eq!(e, a, "{path}");
        }
        (Value::String(e), Value::String(a)) if instant::parse(e).is_ok() => {
            assert_eq!(
                instant::parse(e).unwrap(),
                instant::parse(a).unwrap(),
                "{path}"
            );
        }
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let actual = a.get(key).unwrap_or_else(|| panic!("{path}.{key} missing"));
                assert_same(value, actual, &format!("{path}.{key}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{path}");
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                assert_same(e, a, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(expected, actual, "{path}"),
    }
}

fn two_decimals(value: &Value, field: &str) {
    let text = value[field].to_string();
    assert!(
        text.split_once('.').is_some_and(|(_, f)| f.len() == 2),
        "{field} printed as {text}"
    );
}

#[tokio::test]
async fn every_fixture_is_stored_read_back_and_written_unchanged() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    for name in ORDER_FIXTURES {
        let event = fixture(name);
        let published = &event["data"]["order"];
        let order: NewOrder = serde_json::from_value(published.clone()).unwrap();
        let outcome = orders::insert_if_absent(&mut conn, std::slice::from_ref(&order))
            .await
            .unwrap();
        assert_eq!(outcome, vec![InsertOutcome::Inserted], "{name}");

        let by_id = orders::find_by_id(&conn, order.id).await.unwrap().unwrap();
        let by_number = orders::find_by_order_number(&conn, &order.order_number)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_id, by_number);

        let written = serde_json::to_value(&by_id).unwrap();
        assert_same(published, &written, name);
        for field in [
            "subtotal",
            "discountTotal",
            "taxTotal",
            "fulfillmentCost",
            "grandTotal",
        ] {
            two_decimals(&written, field);
        }
        two_decimals(&written["lineItems"][0], "lineTotal");
        two_decimals(&written["lineItems"][0], "unitPrice");
        // Every field is written, absent ones as null.
        assert_eq!(
            written.as_object().unwrap().len(),
            published.as_object().unwrap().len(),
            "{name}: {written}"
        );
    }
}

#[tokio::test]
async fn money_survives_every_publisher_form_exactly() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    for (text, printed) in [
        ("1E+1", "10.00"),
        ("0", "0.00"),
        ("10.00", "10.00"),
        ("1234567890.12", "1234567890.12"),
        ("1.2345678E7", "12345678.00"),
        ("0.1", "0.10"),
    ] {
        let mut json = serde_json::to_string(&sample_order(1)).unwrap();
        json = json.replace(r#""grandTotal":21.59"#, &format!(r#""grandTotal":{text}"#));
        let order: NewOrder = serde_json::from_str(&json).unwrap();
        orders::insert_if_absent(&mut conn, std::slice::from_ref(&order))
            .await
            .unwrap();
        let stored = orders::find_by_id(&conn, order.id).await.unwrap().unwrap();
        let written = serde_json::to_string(&stored).unwrap();
        assert!(
            written.contains(&format!(r#""grandTotal":{printed}"#)),
            "{text}: {written}"
        );
    }
}

#[tokio::test]
async fn reinserting_an_order_is_a_no_op() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    let order = sample_order(3);
    let first = orders::insert_if_absent(&mut conn, std::slice::from_ref(&order))
        .await
        .unwrap();
    let mut changed = order.clone();
    changed.customer_id = Some("someone-else".into());
    let second = orders::insert_if_absent(&mut conn, &[changed])
        .await
        .unwrap();
    assert_eq!(first, vec![InsertOutcome::Inserted]);
    assert_eq!(second, vec![InsertOutcome::AlreadyPresent]);
    let stored = orders::find_by_id(&conn, order.id).await.unwrap().unwrap();
    assert_eq!(
        stored.customer_id.as_deref(),
        Some("cust-1"),
        "the first write wins"
    );
    let filter = OrderFilter {
        store_number: Some(3),
        ..OrderFilter::default()
    };
    assert_eq!(orders::count(&mut conn, &filter).await.unwrap(), 1);
}

#[tokio::test]
async fn one_bad_order_fails_alone_and_the_rest_of_the_batch_commits() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    let existing = sample_order(9);
    orders::insert_if_absent(&mut conn, std::slice::from_ref(&existing))
        .await
        .unwrap();

    let fresh = sample_order(9);
    let mut number_taken = sample_order(9);
    number_taken.order_number.clone_from(&existing.order_number);
    let mut too_long = sample_order(9);
    too_long.customer_id = Some("x".repeat(101));
    let mut too_many_decimals = sample_order(9);
    too_many_decimals.grand_total = BigDecimal::from_str("1.005").unwrap();
    let mut bad_store = sample_order(0);
    bad_store.store_number = 2001;
    let also_fresh = sample_order(9);

    let batch = vec![
        fresh.clone(),
        existing.clone(),
        number_taken.clone(),
        too_long.clone(),
        fresh.clone(),
        too_many_decimals,
        bad_store,
        also_fresh.clone(),
    ];
    let outcomes = orders::insert_if_absent(&mut conn, &batch).await.unwrap();
    let kind = |o: &InsertOutcome| match o {
        InsertOutcome::Rejected(r) => Some(r.kind),
        _ => None,
    };
    assert_eq!(outcomes[0], InsertOutcome::Inserted);
    assert_eq!(outcomes[1], InsertOutcome::AlreadyPresent);
    assert_eq!(kind(&outcomes[2]), Some(RejectionKind::OrderNumberTaken));
    assert_eq!(kind(&outcomes[3]), Some(RejectionKind::InvalidValue));
    assert_eq!(
        outcomes[4],
        InsertOutcome::AlreadyPresent,
        "a repeat within the batch"
    );
    assert_eq!(kind(&outcomes[5]), Some(RejectionKind::InvalidValue));
    assert_eq!(kind(&outcomes[6]), Some(RejectionKind::InvalidValue));
    assert_eq!(outcomes[7], InsertOutcome::Inserted);

    for id in [fresh.id, also_fresh.id, existing.id] {
        assert!(orders::find_by_id(&conn, id).await.unwrap().is_some());
    }
    for id in [number_taken.id, too_long.id] {
        assert!(orders::find_by_id(&conn, id).await.unwrap().is_none());
    }
}

/// PostgreSQL refuses U+0000 in text and JSONB with an error no retry fixes, failing the whole
/// INSERT; a batch holding such an order would be retried forever and stall the consumer, so
/// the order is rejected alone.
#[tokio::test]
async fn a_nul_character_anywhere_is_rejected_alone() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    let mut in_column = sample_order(3);
    in_column.customer_id = Some("cust\0-1".into());
    let mut in_jsonb = sample_order(3);
    in_jsonb.line_items[0].name = "mug\0".into();
    let mut in_address = sample_order(3);
    in_address.fulfillment_details = Some(order_store::models::FulfillmentDetails {
        fulfillment_type: None,
        scheduled_date: None,
        delivery_address: Some(order_store::models::DeliveryAddress {
            city: Some("Port\0land".into()),
            ..Default::default()
        }),
        pickup_location: None,
        instructions: None,
    });
    let fine = sample_order(3);
    for bad in [&in_column, &in_jsonb, &in_address] {
        let outcomes = orders::insert_if_absent(&mut conn, std::slice::from_ref(bad))
            .await
            .expect("a NUL is the order's fault, not the database's");
        match &outcomes[0] {
            InsertOutcome::Rejected(r) => {
                assert_eq!(r.kind, RejectionKind::InvalidValue);
                assert!(r.message.contains("NUL"), "{}", r.message);
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    let outcomes = orders::insert_if_absent(&mut conn, &[in_jsonb.clone(), fine.clone()])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], InsertOutcome::Rejected(_)));
    assert_eq!(outcomes[1], InsertOutcome::Inserted);
    assert!(orders::find_by_id(&conn, in_jsonb.id)
        .await
        .unwrap()
        .is_none());
}

/// An amount inside the JSONB columns with an absurd
/// exponent is refused instead of being rescaled into billions of digits on write.
#[tokio::test]
async fn an_absurd_line_item_amount_is_rejected_quickly() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    let mut huge_price = sample_order(4);
    huge_price.line_items[0].unit_price = BigDecimal::from_str("1E999999999").unwrap();
    let mut huge_discount = sample_order(4);
    huge_discount.line_items[0].discount_amount =
        Some(BigDecimal::from_str("-7E888888888").unwrap());
    let mut huge_total = sample_order(4);
    huge_total.grand_total = BigDecimal::from_str("1E999999999").unwrap();
    let mut big_but_fine = sample_order(4);
    big_but_fine.line_items[0].unit_price = BigDecimal::from_str("9999999999.99").unwrap();
    let started = std::time::Instant::now();
    let outcomes = orders::insert_if_absent(
        &mut conn,
        &[huge_price, huge_discount, huge_total, big_but_fine.clone()],
    )
    .await
    .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    for outcome in &outcomes[..3] {
        match outcome {
            InsertOutcome::Rejected(r) => assert_eq!(r.kind, RejectionKind::InvalidValue),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(outcomes[3], InsertOutcome::Inserted);
}

#[tokio::test]
async fn a_large_batch_is_inserted_in_one_call() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    let batch: Vec<NewOrder> = (0..2500).map(|i| sample_order(1 + i % 7)).collect();
    let outcomes = orders::insert_if_absent(&mut conn, &batch).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == InsertOutcome::Inserted));
    assert_eq!(
        orders::count(&mut conn, &OrderFilter::default())
            .await
            .unwrap(),
        2500
    );
}

async fn order_with_status(
    conn: &mut order_store::AsyncPgConnection,
    status: OrderStatus,
) -> NewOrder {
    let mut order = sample_order(11);
    order.status = Some(status);
    orders::insert_if_absent(conn, std::slice::from_ref(&order))
        .await
        .unwrap();
    order
}

#[tokio::test]
async fn every_status_transition_is_allowed_or_refused_by_the_rules() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    let allowed: HashSet<(OrderStatus, OrderStatus)> = [
        ("CREATED", "PAID"),
        ("CREATED", "CANCELLED"),
        ("PAID", "PROCESSING"),
        ("PAID", "CANCELLED"),
        ("PROCESSING", "SHIPPED"),
        ("PROCESSING", "CANCELLED"),
        ("SHIPPED", "DELIVERED"),
        ("DELIVERED", "REFUNDED"),
    ]
    .into_iter()
    .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
    .collect();
    for &from in OrderStatus::ALL {
        for &to in OrderStatus::ALL {
            let order = order_with_status(&mut conn, from).await;
            let before = orders::find_by_id(&conn, order.id).await.unwrap().unwrap();
            let result = orders::update_status(&mut conn, order.id, to)
                .await
                .map(|changed| changed.order);
            if allowed.contains(&(from, to)) {
                let updated = result.unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
                assert_eq!(updated.status, to);
                assert!(
                    updated.updated_at > before.updated_at,
                    "{from} -> {to} sets updatedAt"
                );
            } else {
                match result {
                    Err(StoreError::InvalidTransition { from: f, to: t }) => {
                        assert_eq!((f, t), (from, to));
                        let err = orders::update_status(&mut conn, order.id, to)
                            .await
                            .map(|changed| changed.order)
                            .unwrap_err();
                        assert!(
                            matches!(err, StoreError::InvalidTransition { from: f, to: t } if (f, t) == (from, to)),
                            "{err:?}"
                        );
                    }
                    other => panic!("{from} -> {to} should be refused, got {other:?}"),
                }
                let after = orders::find_by_id(&conn, order.id).await.unwrap().unwrap();
                assert_eq!(after, before, "a refused change changes nothing");
            }
        }
    }
    let missing = orders::update_status(&mut conn, uuid::Uuid::new_v4(), OrderStatus::Paid)
        .await
        .map(|changed| changed.order);
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

fn rank(status: OrderStatus) -> u8 {
    match status {
        OrderStatus::Created => 0,
        OrderStatus::Paid => 1,
        OrderStatus::Processing => 2,
        OrderStatus::Shipped => 3,
        OrderStatus::Delivered => 4,
        OrderStatus::Refunded => 5,
        OrderStatus::Cancelled => 6,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_status_changes_follow_one_valid_path() {
    let db = TestDatabase::new().await;
    let pool = db.pool();
    let order = order_with_status(&mut db.connection().await, OrderStatus::Paid).await;
    let targets = [
        OrderStatus::Processing,
        OrderStatus::Cancelled,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Refunded,
    ];
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let pool = pool.clone();
            let to = targets[i % targets.len()];
            tokio::spawn(async move {
                let mut conn = pool.get().await.unwrap();
                (
                    to,
                    orders::update_status(&mut conn, order.id, to)
                        .await
                        .map(|changed| changed.order),
                )
            })
        })
        .collect();
    let mut succeeded = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (to, Ok(updated)) => {
                assert_eq!(updated.status, to);
                succeeded.push(to);
            }
            (_, Err(StoreError::InvalidTransition { .. })) => {}
            (_, Err(e)) => panic!("unexpected error: {e}"),
        }
    }
    // The successful changes, in the order the rules allow them, must chain from PAID to the
    // stored status: nothing applied twice, nothing lost, nothing applied from a stale status.
    succeeded.sort_by_key(|s| rank(*s));
    assert!(!succeeded.is_empty());
    let mut current = OrderStatus::Paid;
    for next in &succeeded {
        assert!(
            current.can_become(*next),
            "{current} -> {next} in {succeeded:?}"
        );
        current = *next;
    }
    let stored = orders::find_by_id(&pool.get().await.unwrap(), order.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, current, "{succeeded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_notes_all_survive() {
    let db = TestDatabase::new().await;
    let pool = db.pool();
    let order = sample_order(12);
    orders::insert_if_absent(&mut pool.get().await.unwrap(), std::slice::from_ref(&order))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.get().await.unwrap();
                orders::append_note(&mut conn, order.id, &format!("note {i}"))
                    .await
                    .map(|changed| changed.order)
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stored = orders::find_by_id(&pool.get().await.unwrap(), order.id)
        .await
        .unwrap()
        .unwrap();
    let details = stored.fulfillment_details.unwrap();
    let notes: HashSet<&str> = details
        .instructions
        .as_deref()
        .unwrap()
        .split('\n')
        .collect();
    let expected: HashSet<String> = (0..50).map(|i| format!("note {i}")).collect();
    assert_eq!(notes.len(), 50);
    assert!(expected.iter().all(|n| notes.contains(n.as_str())));
    assert_eq!(
        details.fulfillment_type,
        Some(order_store::FulfillmentType::Delivery)
    );
}

#[tokio::test]
async fn notes_append_to_existing_instructions() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    let event = fixture("order-completed-delivery.json");
    let order: NewOrder = serde_json::from_value(event["data"]["order"].clone()).unwrap();
    orders::insert_if_absent(&mut conn, std::slice::from_ref(&order))
        .await
        .unwrap();
    let updated = orders::append_note(&mut conn, order.id, "Ring twice")
        .await
        .map(|changed| changed.order)
        .unwrap();
    let details = updated.fulfillment_details.unwrap();
    assert_eq!(
        details.instructions.as_deref(),
        Some("Leave at side door\nRing twice")
    );
    assert_eq!(
        details.delivery_address.unwrap().city.as_deref(),
        Some("Portland")
    );
    assert!(matches!(
        orders::append_note(&mut conn, order.id, "  ").await.map(|changed| changed.order),
        Err(StoreError::Validation(e)) if e[0].field == "note"
    ));
    assert!(matches!(
        orders::append_note(&mut conn, uuid::Uuid::new_v4(), "x")
            .await
            .map(|changed| changed.order),
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn cancel_is_allowed_from_early_statuses_and_records_the_reason() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    for &status in OrderStatus::ALL {
        let order = order_with_status(&mut conn, status).await;
        let result = orders::cancel(&mut conn, order.id, "customer asked")
            .await
            .map(|changed| changed.order);
        if matches!(
            status,
            OrderStatus::Created | OrderStatus::Paid | OrderStatus::Processing
        ) {
            let cancelled = result.unwrap();
            assert_eq!(cancelled.status, OrderStatus::Cancelled);
            let notes = cancelled.fulfillment_details.unwrap().instructions.unwrap();
            assert_eq!(notes, "Cancelled: customer asked");
        } else {
            let err = result.unwrap_err();
            assert!(
                matches!(err, StoreError::CannotCancel(s) if s == status),
                "{err:?}"
            );
        }
    }
    let order = order_with_status(&mut conn, OrderStatus::Paid).await;
    assert!(matches!(
        orders::cancel(&mut conn, order.id, "")
            .await
            .map(|changed| changed.order),
        Err(StoreError::Validation(_))
    ));
}

#[tokio::test]
async fn fulfillment_updates_merge_into_the_details() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    let order = sample_order(13);
    orders::insert_if_absent(&mut conn, std::slice::from_ref(&order))
        .await
        .unwrap();

    let empty = orders::update_fulfillment(&mut conn, order.id, &FulfillmentUpdate::default())
        .await
        .map(|changed| changed.order);
    assert!(matches!(empty, Err(StoreError::EmptyFulfillmentUpdate)));

    let date: DateTime<Utc> = instant::parse("2026-01-02T10:00:00Z").unwrap();
    let first = orders::update_fulfillment(
        &mut conn,
        order.id,
        &FulfillmentUpdate {
            fulfillment_date: Some(date),
            ..FulfillmentUpdate::default()
        },
    )
    .await
    .map(|changed| changed.order)
    .unwrap();
    let details = first.fulfillment_details.clone().unwrap();
    assert_eq!(
        details.fulfillment_type,
        Some(order_store::FulfillmentType::Delivery)
    );
    assert_eq!(details.scheduled_date, Some(date));
    assert_eq!(first.fulfillment_date, Some(date));

    let second = orders::update_fulfillment(
        &mut conn,
        order.id,
        &FulfillmentUpdate {
            pickup_location: Some("Dock 4".into()),
            ..FulfillmentUpdate::default()
        },
    )
    .await
    .map(|changed| changed.order)
    .unwrap();
    let details = second.fulfillment_details.unwrap();
    assert_eq!(
        details.scheduled_date,
        Some(date),
        "earlier fields are kept"
    );
    assert_eq!(details.pickup_location.as_deref(), Some("Dock 4"));
    assert!(second.updated_at >= first.updated_at);

    let missing = orders::update_fulfillment(
        &mut conn,
        uuid::Uuid::new_v4(),
        &FulfillmentUpdate {
            instructions: Some("x".into()),
            ..FulfillmentUpdate::default()
        },
    )
    .await
    .map(|changed| changed.order);
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn search_orders_newest_first_pages_and_counts() {
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    let base = instant::parse("2025-06-01T00:00:00Z").unwrap();
    let mut batch = Vec::new();
    for i in 0..30 {
        let mut order = sample_order(21);
        // Pairs share a createdAt, so the id must break the tie.
        order.created_at = Some(base + Duration::minutes(i / 2));
        order.customer_id = Some(if i % 3 == 0 { "alice" } else { "bob" }.into());
        if i % 5 == 0 {
            order.status = Some(OrderStatus::Shipped);
        }
        batch.push(order);
    }
    batch.push(sample_order(22));
    orders::insert_if_absent(&mut conn, &batch).await.unwrap();

    let store = OrderFilter {
        store_number: Some(21),
        ..OrderFilter::default()
    };
    let all = orders::list(&mut conn, &store, None, 0, 100).await.unwrap();
    assert_eq!(all.len(), 30);
    for pair in all.windows(2) {
        assert!((pair[0].created_at, pair[0].id) > (pair[1].created_at, pair[1].id));
    }

    let page = orders::search(&mut conn, &store, 10, 10).await.unwrap();
    assert_eq!(page.total_count, 30);
    assert_eq!(page.orders, all[10..20].to_vec());
    let last = orders::search(&mut conn, &store, 25, 10).await.unwrap();
    assert_eq!(last.orders, all[25..].to_vec());

    // Keyset continuation reads the same rows as OFFSET.
    let first = orders::list(&mut conn, &store, None, 0, 7).await.unwrap();
    let next = orders::list(
        &mut conn,
        &store,
        Some(Cursor::from(first.last().unwrap())),
        0,
        7,
    )
    .await
    .unwrap();
    assert_eq!(next, all[7..14].to_vec());

    let alice = OrderFilter {
        customer_id: Some("alice".into()),
        ..store.clone()
    };
    assert_eq!(orders::count(&mut conn, &alice).await.unwrap(), 10);
    let shipped = OrderFilter {
        status: Some(OrderStatus::Shipped),
        ..store.clone()
    };
    assert_eq!(orders::count(&mut conn, &shipped).await.unwrap(), 6);
    let window = OrderFilter {
        created_from: Some(base + Duration::minutes(2)),
        created_to: Some(base + Duration::minutes(4)),
        ..store.clone()
    };
    let in_window = orders::list(&mut conn, &window, None, 0, 100)
        .await
        .unwrap();
    assert_eq!(in_window.len(), 6, "both bounds are inclusive");
    let customer_only = OrderFilter {
        customer_id: Some("bob".into()),
        ..OrderFilter::default()
    };
    assert_eq!(orders::count(&mut conn, &customer_only).await.unwrap(), 20);
}

/// `insert_if_absent` fills the defaults of NOT NULL columns itself (its `unnest` form has no
/// `DEFAULT` keyword): if a migration changes one of these defaults, this fails and
/// `order-store/src/orders/insert.rs` must change with it.
#[tokio::test]
async fn the_insert_fills_the_defaults_the_table_declares() {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Default {
        #[diesel(sql_type = Text)]
        column_name: String,
        #[diesel(sql_type = Text)]
        column_default: String,
    }
    let db = TestDatabase::new().await;
    let mut conn = db.connection().await;
    let defaults: Vec<Default> = diesel::sql_query(
        "SELECT column_name::text, column_default::text FROM information_schema.columns \
         WHERE table_name = 'orders' AND column_default IS NOT NULL ORDER BY column_name",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let found: Vec<(String, String)> = defaults
        .into_iter()
        .map(|d| (d.column_name, d.column_default))
        .collect();
    let expected: Vec<(String, String)> = [
        ("applied_discounts", "'[]'::jsonb"),
        ("created_at", "now()"),
        ("discount_total", "0"),
        ("fulfillment_cost", "0"),
        ("payment_status", "'PENDING'::character varying"),
        ("status", "'CREATED'::character varying"),
        ("tax_total", "0"),
        ("updated_at", "now()"),
    ]
    .into_iter()
    .map(|(c, d)| (c.to_owned(), d.to_owned()))
    .collect();
    assert_eq!(found, expected);

    // And an order that leaves them out gets them.
    let mut order = sample_order(1);
    order.discount_total = None;
    order.tax_total = None;
    order.fulfillment_cost = None;
    order.payment_status = None;
    order.status = None;
    order.created_at = None;
    order.updated_at = None;
    let outcomes = orders::insert_if_absent(&mut conn, std::slice::from_ref(&order))
        .await
        .unwrap();
    assert_eq!(outcomes, vec![InsertOutcome::Inserted]);
    let stored = orders::find_by_id(&conn, order.id).await.unwrap().unwrap();
    assert_eq!(stored.discount_total, BigDecimal::from(0));
    assert_eq!(stored.status, OrderStatus::Created);
    assert_eq!(stored.payment_status, order_store::PaymentStatus::Pending);
}

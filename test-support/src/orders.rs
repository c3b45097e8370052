//! The generator of distinct valid orders for tests that need many of them. (The varied,
//! seeded orders of `order-ingest publish-sample` and `order-bench seed` are production code in
//! `order_ingest::sample`.)

use order_store::NewOrder;
use uuid::Uuid;

/// A valid order as checkout would publish it (one line item, delivery, paid), as JSON text.
pub fn order_json(id: Uuid, order_number: &str, store_number: i32) -> String {
    format!(
        r#"{{"id":"{id}","storeNumber":{store_number},"orderNumber":"{order_number}",
        "customerId":"cust-1","fulfillmentType":"DELIVERY","fulfillmentDate":null,"reservationId":null,
        "subtotal":19.99,"discountTotal":0,"taxTotal":1.6,"fulfillmentCost":0,"grandTotal":21.59,
        "paymentStatus":"COMPLETED","paymentMethod":"CARD","paymentReference":null,"status":"PAID",
        "lineItems":[{{"productId":"p-1","sku":"SKU-1","name":"Mug","quantity":1,"unitPrice":19.99,
        "discountAmount":null,"lineTotal":19.99}}],"appliedDiscounts":[],"customerSnapshot":null,
        "fulfillmentDetails":null,"createdAt":null,"updatedAt":null,"createdBy":null,"sessionId":null}}"#
    )
}

/// [`order_json`] with a fresh id and order number, as a [`NewOrder`].
#[allow(clippy::missing_panics_doc)]
pub fn sample_order(store_number: i32) -> NewOrder {
    let id = Uuid::new_v4();
    let json = order_json(
        id,
        &format!("ORD-{store_number}-{}", id.simple()),
        store_number,
    );
    // The text above is a valid order for every id and store number.
    #[allow(clippy::expect_used)]
    serde_json::from_str(&json).expect("the sample order is valid")
}

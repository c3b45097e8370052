//! `Order` as stored, `NewOrder` as checkout publishes it, and their nested types.
//!
//! Both read and write checkout's JSON (docs/compatibility.md §1.3): camelCase, every field written
//! (absent values as `null`), unknown fields ignored, money exact, `lineTotal` computed.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

use super::jsonb::{JsonbColumn, NullableJsonbColumn};
use super::{instant, money, FulfillmentType, OrderStatus, PaymentStatus};
use crate::error::FieldError;
use crate::schema::orders;

/// An order as it is stored in `orders`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: Uuid,
    pub store_number: i32,
    pub order_number: String,
    pub customer_id: Option<String>,
    pub fulfillment_type: FulfillmentType,
    #[serde(with = "instant::option", default)]
    pub fulfillment_date: Option<DateTime<Utc>>,
    pub reservation_id: Option<Uuid>,
    #[serde(with = "money")]
    pub subtotal: BigDecimal,
    #[serde(with = "money")]
    pub discount_total: BigDecimal,
    #[serde(with = "money")]
    pub tax_total: BigDecimal,
    #[serde(with = "money")]
    pub fulfillment_cost: BigDecimal,
    #[serde(with = "money")]
    pub grand_total: BigDecimal,
    pub payment_status: PaymentStatus,
    pub payment_method: Option<String>,
    pub payment_reference: Option<String>,
    pub status: OrderStatus,
    #[diesel(deserialize_as = JsonbColumn<Vec<LineItem>>)]
    pub line_items: Vec<LineItem>,
    #[diesel(deserialize_as = JsonbColumn<Vec<AppliedDiscount>>)]
    pub applied_discounts: Vec<AppliedDiscount>,
    #[diesel(deserialize_as = NullableJsonbColumn<CustomerSnapshot>)]
    pub customer_snapshot: Option<CustomerSnapshot>,
    #[diesel(deserialize_as = NullableJsonbColumn<FulfillmentDetails>)]
    pub fulfillment_details: Option<FulfillmentDetails>,
    #[serde(with = "instant")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "instant")]
    pub updated_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub session_id: Option<Uuid>,
}

/// An order as checkout publishes it in `data.order`: the input of `insert_if_absent`.
///
/// It differs from [`Order`] only where checkout may leave something to the database:
/// a null `createdAt`/`updatedAt` becomes the time of insert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrder {
    pub id: Uuid,
    pub store_number: i32,
    pub order_number: String,
    #[serde(default)]
    pub customer_id: Option<String>,
    pub fulfillment_type: FulfillmentType,
    #[serde(with = "instant::option", default)]
    pub fulfillment_date: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reservation_id: Option<Uuid>,
    #[serde(with = "money")]
    pub subtotal: BigDecimal,
    #[serde(with = "money::option", default)]
    pub discount_total: Option<BigDecimal>,
    #[serde(with = "money::option", default)]
    pub tax_total: Option<BigDecimal>,
    #[serde(with = "money::option", default)]
    pub fulfillment_cost: Option<BigDecimal>,
    #[serde(with = "money")]
    pub grand_total: BigDecimal,
    #[serde(default)]
    pub payment_status: Option<PaymentStatus>,
    #[serde(default)]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub payment_reference: Option<String>,
    #[serde(default)]
    pub status: Option<OrderStatus>,
    pub line_items: Vec<LineItem>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub applied_discounts: Vec<AppliedDiscount>,
    #[serde(default)]
    pub customer_snapshot: Option<CustomerSnapshot>,
    #[serde(default)]
    pub fulfillment_details: Option<FulfillmentDetails>,
    #[serde(with = "instant::option", default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(with = "instant::option", default)]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub session_id: Option<Uuid>,
}

/// A stored order as the input of an insert (backfill copies rows this way): the same
/// fields, nothing left to the database's defaults.
impl From<Order> for NewOrder {
    fn from(order: Order) -> Self {
        Self {
            id: order.id,
            store_number: order.store_number,
            order_number: order.order_number,
            customer_id: order.customer_id,
            fulfillment_type: order.fulfillment_type,
            fulfillment_date: order.fulfillment_date,
            reservation_id: order.reservation_id,
            subtotal: order.subtotal,
            discount_total: Some(order.discount_total),
            tax_total: Some(order.tax_total),
            fulfillment_cost: Some(order.fulfillment_cost),
            grand_total: order.grand_total,
            payment_status: Some(order.payment_status),
            payment_method: order.payment_method,
            payment_reference: order.payment_reference,
            status: Some(order.status),
            line_items: order.line_items,
            applied_discounts: order.applied_discounts,
            customer_snapshot: order.customer_snapshot,
            fulfillment_details: order.fulfillment_details,
            created_at: Some(order.created_at),
            updated_at: Some(order.updated_at),
            created_by: order.created_by,
            session_id: order.session_id,
        }
    }
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// One line of the order. `lineTotal` is written on output and ignored on input.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    #[serde(default)]
    pub product_id: Option<String>,
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    #[serde(with = "money")]
    pub unit_price: BigDecimal,
    #[serde(with = "money::option", default)]
    pub discount_amount: Option<BigDecimal>,
}

impl LineItem {
    /// `unitPrice × quantity − discountAmount`, a missing discount counting as zero.
    pub fn line_total(&self) -> BigDecimal {
        let gross = &self.unit_price * BigDecimal::from(self.quantity);
        match &self.discount_amount {
            Some(discount) => gross - discount,
            None => gross,
        }
    }
}

impl Serialize for LineItem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Money<'a>(&'a BigDecimal);
        impl Serialize for Money<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                money::serialize(self.0, s)
            }
        }
        let mut item = serializer.serialize_struct("LineItem", 7)?;
        item.serialize_field("productId", &self.product_id)?;
        item.serialize_field("sku", &self.sku)?;
        item.serialize_field("name", &self.name)?;
        item.serialize_field("quantity", &self.quantity)?;
        item.serialize_field("unitPrice", &Money(&self.unit_price))?;
        item.serialize_field("discountAmount", &self.discount_amount.as_ref().map(Money))?;
        item.serialize_field("lineTotal", &Money(&self.line_total()))?;
        item.end()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedDiscount {
    #[serde(default)]
    pub discount_id: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, rename = "type")]
    pub discount_type: Option<String>,
    #[serde(with = "money")]
    pub applied_amount: BigDecimal,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerSnapshot {
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub loyalty_tier: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FulfillmentDetails {
    #[serde(default, rename = "type")]
    pub fulfillment_type: Option<FulfillmentType>,
    #[serde(with = "instant::option", default)]
    pub scheduled_date: Option<DateTime<Utc>>,
    #[serde(default)]
    pub delivery_address: Option<DeliveryAddress>,
    #[serde(default)]
    pub pickup_location: Option<String>,
    #[serde(default)]
    pub instructions: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAddress {
    #[serde(default)]
    pub street1: Option<String>,
    #[serde(default)]
    pub street2: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub postal_code: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
}

/// Why a string holding U+0000 is refused: PostgreSQL text and JSONB cannot hold it.
pub const NUL_MESSAGE: &str = "Must not contain NUL (U+0000) characters";

/// Whether `text` can be stored in a PostgreSQL text or JSONB value.
pub fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

/// Stores are numbered 1..=2000 (docs/compatibility.md §1.3).
pub const STORE_NUMBERS: std::ops::RangeInclusive<i32> = 1..=2000;

impl NewOrder {
    /// The fields (JSON paths) whose text holds U+0000.
    pub fn fields_with_nul(&self) -> Vec<String> {
        let mut texts: Vec<(String, Option<&str>)> = vec![
            ("orderNumber".into(), Some(self.order_number.as_str())),
            ("customerId".into(), self.customer_id.as_deref()),
            ("paymentMethod".into(), self.payment_method.as_deref()),
            ("paymentReference".into(), self.payment_reference.as_deref()),
            ("createdBy".into(), self.created_by.as_deref()),
        ];
        for (i, item) in self.line_items.iter().enumerate() {
            texts.push((
                format!("lineItems[{i}].productId"),
                item.product_id.as_deref(),
            ));
            texts.push((format!("lineItems[{i}].sku"), Some(item.sku.as_str())));
            texts.push((format!("lineItems[{i}].name"), Some(item.name.as_str())));
        }
        for (i, d) in self.applied_discounts.iter().enumerate() {
            let prefix = format!("appliedDiscounts[{i}]");
            texts.push((format!("{prefix}.discountId"), d.discount_id.as_deref()));
            texts.push((format!("{prefix}.code"), d.code.as_deref()));
            texts.push((format!("{prefix}.description"), d.description.as_deref()));
            texts.push((format!("{prefix}.type"), d.discount_type.as_deref()));
        }
        if let Some(c) = &self.customer_snapshot {
            let fields = [
                ("customerId", &c.customer_id),
                ("firstName", &c.first_name),
                ("lastName", &c.last_name),
                ("email", &c.email),
                ("phone", &c.phone),
                ("loyaltyTier", &c.loyalty_tier),
            ];
            for (name, value) in fields {
                texts.push((format!("customerSnapshot.{name}"), value.as_deref()));
            }
        }
        if let Some(f) = &self.fulfillment_details {
            texts.push((
                "fulfillmentDetails.pickupLocation".into(),
                f.pickup_location.as_deref(),
            ));
            texts.push((
                "fulfillmentDetails.instructions".into(),
                f.instructions.as_deref(),
            ));
            if let Some(a) = &f.delivery_address {
                let fields = [
                    ("street1", &a.street1),
                    ("street2", &a.street2),
                    ("city", &a.city),
                    ("state", &a.state),
                    ("postalCode", &a.postal_code),
                    ("country", &a.country),
                ];
                for (name, value) in fields {
                    texts.push((
                        format!("fulfillmentDetails.deliveryAddress.{name}"),
                        value.as_deref(),
                    ));
                }
            }
        }
        texts
            .into_iter()
            .filter(|(_, text)| text.is_some_and(has_nul))
            .map(|(field, _)| field)
            .collect()
    }

    /// Everything the `orders` table would refuse or silently alter, checked before the
    /// statement so that one bad order fails alone instead of failing its whole batch.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if !STORE_NUMBERS.contains(&self.store_number) {
            errors.push(FieldError::new("storeNumber", "Must be between 1 and 2000"));
        }
        if let Err(blank) = FieldError::required("orderNumber", Some(&self.order_number)) {
            errors.push(blank);
        }
        let lengths = [
            ("orderNumber", Some(&self.order_number), 50),
            ("customerId", self.customer_id.as_ref(), 100),
            ("paymentMethod", self.payment_method.as_ref(), 50),
            ("paymentReference", self.payment_reference.as_ref(), 100),
            ("createdBy", self.created_by.as_ref(), 50),
        ];
        for (field, value, max) in lengths {
            if let Some(value) = value {
                if value.chars().count() > max {
                    errors.push(FieldError::new(
                        field,
                        format!("Must be at most {max} characters"),
                    ));
                }
            }
        }
        let amounts = [
            ("subtotal", Some(&self.subtotal)),
            ("discountTotal", self.discount_total.as_ref()),
            ("taxTotal", self.tax_total.as_ref()),
            ("fulfillmentCost", self.fulfillment_cost.as_ref()),
            ("grandTotal", Some(&self.grand_total)),
        ];
        for (field, value) in amounts {
            if let Some(Err(message)) = value.map(money::check_fits) {
                errors.push(FieldError::new(field, message));
            }
        }
        // Amounts inside the JSONB columns have no column type to overflow, but they are
        // rescaled to two decimals on every write and read (`lineTotal`): an exponent like
        // `1E999999999` would make that rescaling allocate a billion digits. They get the same
        // bound as the order's own amounts.
        for (i, item) in self.line_items.iter().enumerate() {
            let amounts = [
                ("unitPrice", Some(&item.unit_price)),
                ("discountAmount", item.discount_amount.as_ref()),
            ];
            for (name, value) in amounts {
                if let Some(Err(message)) = value.map(money::check_magnitude) {
                    errors.push(FieldError::new(format!("lineItems[{i}].{name}"), message));
                }
            }
        }
        for (i, discount) in self.applied_discounts.iter().enumerate() {
            if let Err(message) = money::check_magnitude(&discount.applied_amount) {
                errors.push(FieldError::new(
                    format!("appliedDiscounts[{i}].appliedAmount"),
                    message,
                ));
            }
        }
        // PostgreSQL cannot store U+0000 in a text or JSONB value: the INSERT would fail for a
        // reason no retry fixes, so such an order is refused here, alone, as a value that does
        // not fit.
        for field in self.fields_with_nul() {
            errors.push(FieldError::new(field, NUL_MESSAGE));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

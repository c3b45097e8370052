//! The GraphQL types: this API's view of an order (money and instants as strings, the
//! discount fields under the names clients query), with every name and nullability of the
//! existing service's schema (docs/compatibility.md, `order-api/schema.graphql`).

use async_graphql::{Enum, ErrorExtensions, InputObject, Object, Result, SimpleObject, ID};
use order_store::models::{instant, money};
use order_store::{FulfillmentType, Order, OrderStatus, PaymentStatus};
use utoipa::ToSchema;

/// A value the schema declares non-null but the stored order lacks: the field fails, and the
/// null propagates to the nearest nullable parent, as the existing service answers.
fn present<T>(value: Option<T>, what: &str) -> Result<T> {
    value.ok_or_else(|| {
        async_graphql::Error::new(format!("{what} is missing in the stored order"))
            .extend_with(|_, e| e.set("classification", "INTERNAL_ERROR"))
    })
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, ToSchema)]
#[graphql(name = "OrderStatus")]
#[schema(as = OrderStatus, rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GqlOrderStatus {
    Created,
    Paid,
    Processing,
    Shipped,
    Delivered,
    Cancelled,
    Refunded,
}

impl From<OrderStatus> for GqlOrderStatus {
    fn from(s: OrderStatus) -> Self {
        match s {
            OrderStatus::Created => Self::Created,
            OrderStatus::Paid => Self::Paid,
            OrderStatus::Processing => Self::Processing,
            OrderStatus::Shipped => Self::Shipped,
            OrderStatus::Delivered => Self::Delivered,
            OrderStatus::Cancelled => Self::Cancelled,
            OrderStatus::Refunded => Self::Refunded,
        }
    }
}

impl From<GqlOrderStatus> for OrderStatus {
    fn from(s: GqlOrderStatus) -> Self {
        match s {
            GqlOrderStatus::Created => Self::Created,
            GqlOrderStatus::Paid => Self::Paid,
            GqlOrderStatus::Processing => Self::Processing,
            GqlOrderStatus::Shipped => Self::Shipped,
            GqlOrderStatus::Delivered => Self::Delivered,
            GqlOrderStatus::Cancelled => Self::Cancelled,
            GqlOrderStatus::Refunded => Self::Refunded,
        }
    }
}

/// Includes `PICKUP`, which the existing schema lacked (docs/compatibility.md §6.4).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, ToSchema)]
#[graphql(name = "FulfillmentType")]
#[schema(
    as = FulfillmentType,
    rename_all = "SCREAMING_SNAKE_CASE",
    description = "How the order reaches the customer"
)]
pub enum GqlFulfillmentType {
    Immediate,
    WillCall,
    Delivery,
    Pickup,
}

impl From<FulfillmentType> for GqlFulfillmentType {
    fn from(t: FulfillmentType) -> Self {
        match t {
            FulfillmentType::Delivery => Self::Delivery,
            FulfillmentType::Pickup => Self::Pickup,
            FulfillmentType::WillCall => Self::WillCall,
            FulfillmentType::Immediate => Self::Immediate,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, ToSchema)]
#[graphql(name = "PaymentStatus")]
#[schema(as = PaymentStatus, rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GqlPaymentStatus {
    Pending,
    Authorized,
    Completed,
    Failed,
    Refunded,
}

impl From<PaymentStatus> for GqlPaymentStatus {
    fn from(s: PaymentStatus) -> Self {
        match s {
            PaymentStatus::Pending => Self::Pending,
            PaymentStatus::Authorized => Self::Authorized,
            PaymentStatus::Completed => Self::Completed,
            PaymentStatus::Failed => Self::Failed,
            PaymentStatus::Refunded => Self::Refunded,
        }
    }
}

pub struct GqlOrder(pub Order);

#[Object(name = "Order")]
impl GqlOrder {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn store_number(&self) -> i32 {
        self.0.store_number
    }
    async fn order_number(&self) -> &str {
        &self.0.order_number
    }
    async fn customer_id(&self) -> Option<&str> {
        self.0.customer_id.as_deref()
    }
    async fn fulfillment_type(&self) -> GqlFulfillmentType {
        self.0.fulfillment_type.into()
    }
    async fn fulfillment_date(&self) -> Option<String> {
        self.0.fulfillment_date.as_ref().map(instant::format)
    }
    async fn subtotal(&self) -> String {
        money::format(&self.0.subtotal)
    }
    async fn discount_total(&self) -> String {
        money::format(&self.0.discount_total)
    }
    async fn tax_total(&self) -> String {
        money::format(&self.0.tax_total)
    }
    async fn fulfillment_cost(&self) -> String {
        money::format(&self.0.fulfillment_cost)
    }
    async fn grand_total(&self) -> String {
        money::format(&self.0.grand_total)
    }
    async fn payment_status(&self) -> GqlPaymentStatus {
        self.0.payment_status.into()
    }
    async fn status(&self) -> GqlOrderStatus {
        self.0.status.into()
    }
    async fn line_items(&self) -> Vec<OrderLineItem> {
        self.0
            .line_items
            .iter()
            .map(|item| OrderLineItem {
                product_id: item.product_id.clone(),
                sku: ID(item.sku.clone()),
                name: item.name.clone(),
                quantity: item.quantity,
                unit_price: money::format(&item.unit_price),
                line_total: money::format(&item.line_total()),
                discount_amount: item.discount_amount.as_ref().map(money::format),
            })
            .collect()
    }
    /// Resolved from the model's `code`/`type`/`appliedAmount` (docs/compatibility.md §6.4).
    async fn applied_discounts(&self) -> Vec<AppliedDiscount> {
        self.0
            .applied_discounts
            .iter()
            .map(|d| AppliedDiscount {
                discount_id: present(d.discount_id.clone(), "discountId"),
                discount_code: d.code.clone(),
                description: d.description.clone(),
                discount_type: present(d.discount_type.clone(), "discountType"),
                amount: money::format(&d.applied_amount),
            })
            .collect()
    }
    async fn customer_snapshot(&self) -> Option<CustomerSnapshot> {
        self.0.customer_snapshot.as_ref().map(|c| CustomerSnapshot {
            customer_id: present(c.customer_id.clone(), "customerSnapshot.customerId"),
            first_name: c.first_name.clone(),
            last_name: c.last_name.clone(),
            email: c.email.clone(),
            phone: c.phone.clone(),
            loyalty_tier: c.loyalty_tier.clone(),
        })
    }
    async fn fulfillment_details(&self) -> Option<FulfillmentDetails> {
        self.0
            .fulfillment_details
            .as_ref()
            .map(|d| FulfillmentDetails {
                fulfillment_type: d.fulfillment_type.map(Into::into),
                scheduled_date: d.scheduled_date.as_ref().map(instant::format),
                delivery_address: d.delivery_address.as_ref().map(|a| DeliveryAddress {
                    street1: a.street1.clone(),
                    street2: a.street2.clone(),
                    city: a.city.clone(),
                    state: a.state.clone(),
                    postal_code: a.postal_code.clone(),
                    country: a.country.clone(),
                }),
                pickup_location: d.pickup_location.clone(),
                instructions: d.instructions.clone(),
            })
    }
    async fn created_at(&self) -> String {
        instant::format(&self.0.created_at)
    }
    async fn updated_at(&self) -> String {
        instant::format(&self.0.updated_at)
    }
}

#[derive(SimpleObject)]
#[graphql(name = "OrderLineItem")]
pub struct OrderLineItem {
    product_id: Option<String>,
    sku: ID,
    name: String,
    quantity: i32,
    unit_price: String,
    line_total: String,
    discount_amount: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "AppliedDiscount")]
pub struct AppliedDiscount {
    discount_id: Result<String>,
    discount_code: Option<String>,
    description: Option<String>,
    discount_type: Result<String>,
    amount: String,
}

#[derive(SimpleObject)]
#[graphql(name = "CustomerSnapshot")]
pub struct CustomerSnapshot {
    customer_id: Result<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    loyalty_tier: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "FulfillmentDetails")]
pub struct FulfillmentDetails {
    #[graphql(name = "type")]
    fulfillment_type: Option<GqlFulfillmentType>,
    scheduled_date: Option<String>,
    delivery_address: Option<DeliveryAddress>,
    pickup_location: Option<String>,
    instructions: Option<String>,
}

// Also the schema of the REST answer's `deliveryAddress` (the same keys and values).
#[derive(SimpleObject, ToSchema)]
#[graphql(name = "DeliveryAddress")]
#[schema(rename_all = "camelCase")]
pub struct DeliveryAddress {
    street1: Option<String>,
    street2: Option<String>,
    city: Option<String>,
    state: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "OrderSearchResult")]
pub struct OrderSearchResult {
    pub orders: Vec<GqlOrder>,
    pub total_count: i32,
    pub has_more: bool,
}

#[derive(InputObject)]
#[graphql(name = "OrderSearchInput")]
pub struct OrderSearchInput {
    pub store_number: i32,
    pub customer_id: Option<String>,
    pub status: Option<GqlOrderStatus>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub limit: Option<i32>,
    pub offset: Option<i32>,
}

#[derive(InputObject)]
#[graphql(name = "UpdateFulfillmentInput")]
pub struct UpdateFulfillmentInput {
    pub fulfillment_date: Option<String>,
    pub pickup_location: Option<String>,
    pub instructions: Option<String>,
}

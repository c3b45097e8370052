//! Schemas of the bodies order-api answers with but does not define: the order as
//! `order-store` serializes it, and the error body [`crate::error`] writes as JSON. Each type
//! here only describes a JSON shape for the document; none is ever built. The enums are the
//! GraphQL ones, which have the same names and values, and so is the delivery address. Field names and
//! optionality follow the serialized form (`order_store::Order`, `ErrorBody::to_json`).

#![allow(dead_code, reason = "schema-only types: described, never constructed")]

use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::Object;
use utoipa::ToSchema;

pub use crate::graphql::types::{
    DeliveryAddress, GqlFulfillmentType as FulfillmentType, GqlOrderStatus as OrderStatus,
    GqlPaymentStatus as PaymentStatus,
};

/// Money is an exact decimal written as a JSON number with two decimals (never through f64).
const MONEY: &str = "Exact amount with two decimals, e.g. 19.99";

fn money() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .description(Some(MONEY))
        .build()
}

fn optional_money() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Number, Type::Null]))
        .description(Some(MONEY))
        .build()
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct LineItem {
    product_id: Option<String>,
    sku: String,
    name: String,
    quantity: i32,
    #[schema(schema_with = money)]
    unit_price: String,
    #[schema(schema_with = optional_money)]
    discount_amount: Option<String>,
    #[schema(schema_with = money)]
    line_total: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AppliedDiscount {
    discount_id: Option<String>,
    code: Option<String>,
    description: Option<String>,
    #[schema(rename = "type")]
    discount_type: Option<String>,
    #[schema(schema_with = money)]
    applied_amount: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CustomerSnapshot {
    customer_id: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    loyalty_tier: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct FulfillmentDetails {
    #[schema(rename = "type")]
    fulfillment_type: Option<FulfillmentType>,
    #[schema(format = DateTime)]
    scheduled_date: Option<String>,
    delivery_address: Option<DeliveryAddress>,
    pickup_location: Option<String>,
    instructions: Option<String>,
}

/// An order, as every REST endpoint answers it.
#[derive(ToSchema)]
#[allow(
    clippy::struct_field_names,
    reason = "the field names are the JSON keys"
)]
#[schema(rename_all = "camelCase")]
pub struct Order {
    #[schema(format = Uuid)]
    id: String,
    store_number: i32,
    order_number: String,
    customer_id: Option<String>,
    fulfillment_type: FulfillmentType,
    #[schema(format = DateTime)]
    fulfillment_date: Option<String>,
    #[schema(format = Uuid)]
    reservation_id: Option<String>,
    #[schema(schema_with = money)]
    subtotal: String,
    #[schema(schema_with = money)]
    discount_total: String,
    #[schema(schema_with = money)]
    tax_total: String,
    #[schema(schema_with = money)]
    fulfillment_cost: String,
    #[schema(schema_with = money)]
    grand_total: String,
    payment_status: PaymentStatus,
    payment_method: Option<String>,
    payment_reference: Option<String>,
    status: OrderStatus,
    line_items: Vec<LineItem>,
    applied_discounts: Vec<AppliedDiscount>,
    customer_snapshot: Option<CustomerSnapshot>,
    fulfillment_details: Option<FulfillmentDetails>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    created_by: Option<String>,
    #[schema(format = Uuid)]
    session_id: Option<String>,
}

/// One field's validation error.
#[derive(ToSchema)]
pub struct ValidationError {
    field: String,
    message: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ErrorDetails {
    #[schema(required = false)]
    validation_errors: Vec<ValidationError>,
}

/// Every error body, REST and the 503 of readiness alike.
#[derive(ToSchema)]
#[schema(as = Error, rename_all = "camelCase")]
pub struct ErrorBody {
    /// Reason phrase; 'Authentication required' on 401, 'Access denied' on 403
    error: String,
    message: String,
    path: String,
    status: i32,
    #[schema(required = true)]
    trace_id: Option<String>,
    details: ErrorDetails,
}

/// The health endpoints' body.
#[derive(ToSchema)]
pub struct Health {
    #[schema(inline)]
    status: Up,
}

#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Up {
    Up,
}

/// The Actuator health endpoints' body.
#[derive(ToSchema)]
pub struct ActuatorHealth {
    #[schema(inline)]
    status: UpOrDown,
}

#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpOrDown {
    Up,
    Down,
}

/// A GraphQL request over HTTP, as `POST /graphql` reads it.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct GraphQlRequest {
    #[schema(min_length = 1)]
    query: String,
    #[schema(required = false)]
    operation_name: String,
    #[schema(value_type = Object, required = false)]
    variables: (),
}

//! The GraphQL API of CONTRACT 4, on async-graphql. The types live here, not in the store:
//! they are this API's view of an order (money and instants as strings, the discount fields
//! under the names clients query).

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    Context, EmptySubscription, Enum, ErrorExtensions, InputObject, Object, Schema, SimpleObject,
    Variables, ID,
};
use order_store::models::{instant, money};
use order_store::orders::{self, FulfillmentUpdate, OrderFilter};
use order_store::{FulfillmentType, Order, OrderStatus, PaymentStatus, StoreError};
use serde::Deserialize;
use warp::reply::{Reply, Response};
use warp::Rejection;

use crate::auth::{Principal, READ_SCOPE, WRITE_SCOPE};
use crate::db::Db;
use crate::error::ApiError;
use crate::validate::{self, Checks};
use crate::AppState;

pub type OrderSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Deepest selection accepted. The schema has no cycles, so real queries stay under 6; the
/// limit mostly bounds introspection, with room for GraphiQL's own introspection query.
pub const MAX_DEPTH: usize = 15;
/// Most fields one query may select (aliases count), so that one request cannot multiply
/// the work of a page of orders.
pub const MAX_COMPLEXITY: usize = 1000;
/// `ordersByCustomer` has no paging arguments; it answers at most this many, newest first.
pub const MAX_CUSTOMER_ORDERS: i64 = 1000;

pub fn schema(db: Db) -> OrderSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(db)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphQlBody {
    query: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Value>,
}

/// `serde_json` (with `arbitrary_precision`) numbers into GraphQL values, exactly.
fn to_graphql_value(value: serde_json::Value) -> async_graphql::Value {
    use async_graphql::Value as V;
    match value {
        serde_json::Value::Null => V::Null,
        serde_json::Value::Bool(b) => V::Boolean(b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                V::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                V::Number(u.into())
            } else {
                n.as_f64()
                    .and_then(async_graphql::Number::from_f64)
                    .map_or(V::Null, V::Number)
            }
        }
        serde_json::Value::String(s) => V::String(s),
        serde_json::Value::Array(items) => {
            V::List(items.into_iter().map(to_graphql_value).collect())
        }
        serde_json::Value::Object(map) => V::Object(
            map.into_iter()
                .map(|(k, v)| (async_graphql::Name::new(k), to_graphql_value(v)))
                .collect(),
        ),
    }
}

/// Parsed GraphQL documents by query text. Clients send the same few queries over and over, and
/// parsing the text was a third of the API's CPU under the GraphQL benchmark
/// (docs/BENCHMARKS.md); validation and limits still run on every request.
#[derive(Default)]
pub struct DocumentCache {
    documents: std::sync::Mutex<std::collections::HashMap<String, ExecutableDocument>>,
}

impl DocumentCache {
    /// Distinct query texts kept; past it the cache starts over, so clients that send a new
    /// text every time cannot grow it.
    const CAPACITY: usize = 256;

    fn parsed(&self, query: &str) -> Option<ExecutableDocument> {
        if let Some(document) = self.lock().get(query) {
            return Some(document.clone());
        }
        // Syntax errors are left to the executor, which reports them as GraphQL errors.
        let document = async_graphql::parser::parse_query(query).ok()?;
        let mut documents = self.lock();
        if documents.len() >= Self::CAPACITY {
            documents.clear();
        }
        documents.insert(query.to_owned(), document.clone());
        Some(document)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, ExecutableDocument>> {
        // A poisoned lock only means another request panicked while holding it; the map is
        // still a valid map, so it keeps serving.
        self.documents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `POST /graphql`: the body is read as JSON by the route; here it becomes a request.
pub async fn handle(
    principal: Principal,
    body: serde_json::Value,
    state: AppState,
) -> Result<Response, Rejection> {
    let body: GraphQlBody = serde_json::from_value(body)
        .map_err(|e| ApiError::BadRequest(format!("Not a GraphQL request: {e}")))?;
    let Some(query) = body.query.filter(|q| !q.trim().is_empty()) else {
        return Err(ApiError::Validation(vec![order_store::FieldError::new(
            "query",
            validate::REQUIRED,
        )])
        .into());
    };
    let document = state.graphql_documents.parsed(&query);
    let mut request = async_graphql::Request::new(query).data(principal);
    if let Some(document) = document {
        request.set_parsed_query(document);
    }
    if let Some(name) = body.operation_name {
        request = request.operation_name(name);
    }
    if let Some(variables) = body.variables {
        request = request.variables(Variables::from_value(to_graphql_value(variables)));
    }
    let mut response = state.schema.execute(request).await;
    // Errors async-graphql raises itself (syntax, unknown fields, limits) are the client's.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("classification").is_none() {
            extensions.set("classification", "BAD_REQUEST");
        }
    }
    Ok(warp::reply::json(&response).into_response())
}

fn classified(message: impl Into<String>, classification: &'static str) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("classification", classification))
}

fn validation_failed(errors: Vec<order_store::FieldError>) -> async_graphql::Error {
    let map: serde_json::Map<String, serde_json::Value> = errors
        .into_iter()
        .map(|e| (e.field, serde_json::Value::String(e.message)))
        .collect();
    let value = to_graphql_value(serde_json::Value::Object(map));
    async_graphql::Error::new("Validation failed").extend_with(move |_, e| {
        e.set("classification", "BAD_REQUEST");
        e.set("validationErrors", value.clone());
    })
}

fn store_error(error: StoreError) -> async_graphql::Error {
    match error {
        StoreError::NotFound(message) => classified(message, "NOT_FOUND"),
        StoreError::Validation(errors) => validation_failed(errors),
        e @ (StoreError::InvalidTransition { .. }
        | StoreError::CannotCancel(_)
        | StoreError::Conflict(_)
        | StoreError::InvalidData(_)) => classified(e.to_string(), "BAD_REQUEST"),
        StoreError::Unavailable(reason) => {
            tracing::warn!(reason = %reason, "database unavailable");
            classified(
                "The service is temporarily unavailable; retry later",
                "INTERNAL_ERROR",
            )
        }
        StoreError::Other(e) => {
            tracing::error!(error = %e, "unexpected error");
            classified("An unexpected error occurred", "INTERNAL_ERROR")
        }
    }
}

fn checked(checks: Checks) -> async_graphql::Result<()> {
    let errors = checks.into_errors();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(validation_failed(errors))
    }
}

fn require(ctx: &Context<'_>, scope: &'static str) -> async_graphql::Result<()> {
    match ctx.data_opt::<Principal>() {
        Some(p) if p.has_scope(scope) => Ok(()),
        _ => Err(classified("Access denied", "FORBIDDEN")),
    }
}

fn db<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Db> {
    ctx.data::<Db>()
        .map_err(|_| classified("An unexpected error occurred", "INTERNAL_ERROR"))
}

// ---------------------------------------------------------------------------------------
// Types

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "OrderStatus")]
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

/// Includes `PICKUP`, which the existing schema lacked (CONTRACT 6.4).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "FulfillmentType")]
pub enum GqlFulfillmentType {
    Delivery,
    Pickup,
    WillCall,
    Immediate,
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

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "PaymentStatus")]
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
    /// Resolved from the model's `code`/`type`/`appliedAmount` (CONTRACT 6.4).
    async fn applied_discounts(&self) -> Vec<AppliedDiscount> {
        self.0
            .applied_discounts
            .iter()
            .map(|d| AppliedDiscount {
                discount_id: d.discount_id.clone(),
                discount_code: d.code.clone(),
                description: d.description.clone(),
                discount_type: d.discount_type.clone(),
                amount: money::format(&d.applied_amount),
            })
            .collect()
    }
    async fn customer_snapshot(&self) -> Option<CustomerSnapshot> {
        self.0.customer_snapshot.as_ref().map(|c| CustomerSnapshot {
            customer_id: c.customer_id.clone(),
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
    discount_id: Option<String>,
    discount_code: Option<String>,
    description: Option<String>,
    discount_type: Option<String>,
    amount: String,
}

#[derive(SimpleObject)]
#[graphql(name = "CustomerSnapshot")]
pub struct CustomerSnapshot {
    customer_id: Option<String>,
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

#[derive(SimpleObject)]
#[graphql(name = "DeliveryAddress")]
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
    orders: Vec<GqlOrder>,
    total_count: i32,
    has_more: bool,
}

#[derive(InputObject)]
#[graphql(name = "OrderSearchInput")]
pub struct OrderSearchInput {
    store_number: i32,
    customer_id: Option<String>,
    status: Option<GqlOrderStatus>,
    start_date: Option<String>,
    end_date: Option<String>,
    limit: Option<i32>,
    offset: Option<i32>,
}

#[derive(InputObject)]
#[graphql(name = "UpdateFulfillmentInput")]
pub struct UpdateFulfillmentInput {
    fulfillment_date: Option<String>,
    pickup_location: Option<String>,
    instructions: Option<String>,
}

/// `limit` 1..100 (default 50) and `offset` ≥ 0.
fn page(checks: &mut Checks, limit: Option<i32>, offset: Option<i32>) -> (i64, i64) {
    let limit = i64::from(limit.unwrap_or(50));
    let offset = i64::from(offset.unwrap_or(0));
    if !(1..=100).contains(&limit) {
        checks.add("limit", validate::SIZE);
    }
    if offset < 0 {
        checks.add("offset", validate::NOT_NEGATIVE);
    }
    (limit, offset)
}

fn orders_of(list: Vec<Order>) -> Vec<GqlOrder> {
    list.into_iter().map(GqlOrder).collect()
}

// ---------------------------------------------------------------------------------------
// Queries

pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// The order, or null when there is none with this id.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<GqlOrder>> {
        require(ctx, READ_SCOPE)?;
        let mut checks = Checks::new();
        let uuid = checks.uuid("id", &id);
        checked(checks)?;
        let Some(uuid) = uuid else { return Ok(None) };
        let db = db(ctx)?;
        let mut conn = db.conn().await.map_err(store_error)?;
        let order = db
            .timed(orders::find_by_id(&mut conn, uuid))
            .await
            .map_err(store_error)?;
        Ok(order.map(GqlOrder))
    }

    async fn order_by_number(
        &self,
        ctx: &Context<'_>,
        order_number: String,
    ) -> async_graphql::Result<Option<GqlOrder>> {
        require(ctx, READ_SCOPE)?;
        let mut checks = Checks::new();
        checks.required("orderNumber", Some(&order_number), 50);
        checked(checks)?;
        let db = db(ctx)?;
        let mut conn = db.conn().await.map_err(store_error)?;
        let order = db
            .timed(orders::find_by_order_number(&mut conn, &order_number))
            .await
            .map_err(store_error)?;
        Ok(order.map(GqlOrder))
    }

    /// A page of the store's orders, newest first, optionally of one status.
    async fn orders(
        &self,
        ctx: &Context<'_>,
        store_number: i32,
        status: Option<GqlOrderStatus>,
        limit: Option<i32>,
        offset: Option<i32>,
    ) -> async_graphql::Result<Vec<GqlOrder>> {
        require(ctx, READ_SCOPE)?;
        let mut checks = Checks::new();
        checks.store_number("storeNumber", i64::from(store_number));
        let (limit, offset) = page(&mut checks, limit, offset);
        checked(checks)?;
        let filter = OrderFilter {
            store_number: Some(store_number),
            status: status.map(Into::into),
            ..OrderFilter::default()
        };
        let db = db(ctx)?;
        let mut conn = db.conn().await.map_err(store_error)?;
        let list = db
            .timed(orders::list(&mut conn, &filter, None, offset, limit))
            .await
            .map_err(store_error)?;
        Ok(orders_of(list))
    }

    /// The customer's orders, newest first (at most `MAX_CUSTOMER_ORDERS`).
    async fn orders_by_customer(
        &self,
        ctx: &Context<'_>,
        customer_id: String,
    ) -> async_graphql::Result<Vec<GqlOrder>> {
        require(ctx, READ_SCOPE)?;
        let mut checks = Checks::new();
        checks.required("customerId", Some(&customer_id), 100);
        checked(checks)?;
        let filter = OrderFilter {
            customer_id: Some(customer_id),
            ..OrderFilter::default()
        };
        let db = db(ctx)?;
        let mut conn = db.conn().await.map_err(store_error)?;
        let list = db
            .timed(orders::list(
                &mut conn,
                &filter,
                None,
                0,
                MAX_CUSTOMER_ORDERS,
            ))
            .await
            .map_err(store_error)?;
        Ok(orders_of(list))
    }

    /// Honours every input, `customerId` and `status` included (CONTRACT 6.5).
    async fn search_orders(
        &self,
        ctx: &Context<'_>,
        input: OrderSearchInput,
    ) -> async_graphql::Result<OrderSearchResult> {
        require(ctx, READ_SCOPE)?;
        let mut checks = Checks::new();
        checks.store_number("storeNumber", i64::from(input.store_number));
        let customer = match input.customer_id.as_deref() {
            Some(c) if !c.trim().is_empty() => checks.required("customerId", Some(c), 100),
            _ => None,
        };
        let start = input
            .start_date
            .as_deref()
            .and_then(|s| checks.instant("startDate", s));
        let end = input
            .end_date
            .as_deref()
            .and_then(|s| checks.instant("endDate", s));
        checks.date_range(start, end);
        let (limit, offset) = page(&mut checks, input.limit, input.offset);
        checked(checks)?;
        let filter = OrderFilter {
            store_number: Some(input.store_number),
            customer_id: customer,
            status: input.status.map(Into::into),
            created_from: start,
            created_to: end,
        };
        let db = db(ctx)?;
        let mut conn = db.conn().await.map_err(store_error)?;
        let found = db
            .timed(orders::search(&mut conn, &filter, offset, limit))
            .await
            .map_err(store_error)?;
        let page = offset / limit;
        Ok(OrderSearchResult {
            has_more: (page + 1) * limit < found.total_count,
            total_count: i32::try_from(found.total_count).unwrap_or(i32::MAX),
            orders: orders_of(found.orders),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Mutations

pub struct MutationRoot;

fn order_id(checks: &mut Checks, id: &ID) -> Option<uuid::Uuid> {
    checks.uuid("id", id)
}

#[Object]
impl MutationRoot {
    async fn update_order_status(
        &self,
        ctx: &Context<'_>,
        id: ID,
        status: GqlOrderStatus,
    ) -> async_graphql::Result<Option<GqlOrder>> {
        require(ctx, WRITE_SCOPE)?;
        let mut checks = Checks::new();
        let uuid = order_id(&mut checks, &id);
        checked(checks)?;
        let Some(uuid) = uuid else { return Ok(None) };
        let db = db(ctx)?;
        let mut conn = db.conn().await.map_err(store_error)?;
        let order = db
            .timed(orders::update_status(&mut conn, uuid, status.into()))
            .await
            .map_err(store_error)?;
        Ok(Some(GqlOrder(order)))
    }

    async fn update_fulfillment(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateFulfillmentInput,
    ) -> async_graphql::Result<Option<GqlOrder>> {
        require(ctx, WRITE_SCOPE)?;
        let mut checks = Checks::new();
        let uuid = order_id(&mut checks, &id);
        let date = input
            .fulfillment_date
            .as_deref()
            .and_then(|d| checks.instant("fulfillmentDate", d));
        if input.fulfillment_date.is_none()
            && input.pickup_location.is_none()
            && input.instructions.is_none()
        {
            checks.add("input", validate::FULFILLMENT_INPUT);
        }
        checks.text("pickupLocation", input.pickup_location.as_deref());
        checks.text("instructions", input.instructions.as_deref());
        checked(checks)?;
        let Some(uuid) = uuid else { return Ok(None) };
        let update = FulfillmentUpdate {
            fulfillment_date: date,
            pickup_location: input.pickup_location,
            instructions: input.instructions,
        };
        let db = db(ctx)?;
        let mut conn = db.conn().await.map_err(store_error)?;
        let order = db
            .timed(orders::update_fulfillment(&mut conn, uuid, &update))
            .await
            .map_err(store_error)?;
        Ok(Some(GqlOrder(order)))
    }

    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> async_graphql::Result<Option<GqlOrder>> {
        require(ctx, WRITE_SCOPE)?;
        let mut checks = Checks::new();
        let uuid = order_id(&mut checks, &id);
        checks.required("reason", Some(&reason), 10_000);
        checked(checks)?;
        let Some(uuid) = uuid else { return Ok(None) };
        let db = db(ctx)?;
        let mut conn = db.conn().await.map_err(store_error)?;
        let order = db
            .timed(orders::cancel(&mut conn, uuid, &reason))
            .await
            .map_err(store_error)?;
        Ok(Some(GqlOrder(order)))
    }

    async fn add_order_note(
        &self,
        ctx: &Context<'_>,
        id: ID,
        note: String,
    ) -> async_graphql::Result<Option<GqlOrder>> {
        require(ctx, WRITE_SCOPE)?;
        let mut checks = Checks::new();
        let uuid = order_id(&mut checks, &id);
        checks.required("note", Some(&note), 10_000);
        checked(checks)?;
        let Some(uuid) = uuid else { return Ok(None) };
        let db = db(ctx)?;
        let mut conn = db.conn().await.map_err(store_error)?;
        let order = db
            .timed(orders::append_note(&mut conn, uuid, &note))
            .await
            .map_err(store_error)?;
        Ok(Some(GqlOrder(order)))
    }
}

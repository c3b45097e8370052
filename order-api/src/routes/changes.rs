//! The order resource's changes: status, fulfillment, cancel and note. Each endpoint's
//! [`Route`], its filter and its handler (typed body in, one change committed with its outbox
//! event, the order and its consistency token out). Errors leave as [`ApiError`] rejections and
//! are answered in one place ([`crate::error::recover`]).

use order_store::Order;
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;
use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::body::json_body;
use super::orders::decode_path;
use super::{json_response, with_changes, write, Route};
use crate::error::ApiError;
use crate::openapi::{schemas, BodyErrors, Changed, NotFound, OrderId, ReadErrors};
use crate::service::{self, Edit};
use crate::validate::{self, Collect, Field};
use crate::AppState;

/// The reply to a successful change: the order, and the consistency token that lets the
/// client's next read see the change.
fn changed(order: &Order, state: &AppState) -> Response {
    let mut response = json_response(order);
    with_consistency_token(&mut response, state.db.consistency_token());
    response
}

/// Adds `token` as the `X-Consistency-Token` header.
pub fn with_consistency_token(response: &mut Response, token: Option<String>) {
    // An LSN's text is plain ASCII (hexadecimal digits and a slash): always a valid value.
    if let Some(value) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response
            .headers_mut()
            .insert(crate::replica::CONSISTENCY_HEADER, value);
    }
}

/// A body field meant to be a string, kept apart from other JSON types so that a wrong type
/// is reported as that field's error rather than as an unreadable body.
#[derive(Debug)]
pub enum Text {
    Given(String),
    NotAString,
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => Text::Given(s),
            _ => Text::NotAString,
        })
    }
}

/// An optional string field of a body (`null` is absent).
fn optional_text(field: &str, value: Option<&Text>) -> Field<Option<String>> {
    match value {
        None => Ok(None),
        Some(Text::Given(s)) => validate::optional_text(field, Some(s), validate::MAX_TEXT),
        Some(Text::NotAString) => Err(order_store::FieldError::new(field, validate::STRING)),
    }
}

// The bodies' fields are read as [`Text`] and validated in the handlers, so that a wrong type
// gets the field's own message; their schemas state the types and bounds that validation accepts.

/// `PATCH /orders/{orderId}/status` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StatusBody {
    #[schema(value_type = schemas::OrderStatus, required = true)]
    status: Option<Text>,
}

/// The route of [`update_status()`].
pub const UPDATE_STATUS: Route = Route::patch("/orders/{orderId}/status");

/// `PATCH /orders/{orderId}/status` `{ "status" }`
#[utoipa::path(
    patch,
    path = UPDATE_STATUS.path,
    operation_id = "updateOrderStatus",
    summary = "Change the order's status (allowed transitions only)",
    security(("bearerAuth" = ["order:write"])),
    params(OrderId),
    request_body = StatusBody,
    responses(Changed, ReadErrors, NotFound, BodyErrors)
)]
pub fn update_status(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "status")
        .and(warp::patch())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_changes(state))
        .and_then(answer_update_status)
        .boxed()
}

/// Answers [`update_status()`].
async fn answer_update_status(
    id: String,
    body: StatusBody,
    state: AppState,
) -> Result<Response, Rejection> {
    let status = match &body.status {
        Some(Text::NotAString) => Err(order_store::FieldError::new("status", validate::STATUS)),
        Some(Text::Given(s)) => validate::status("status", Some(s)),
        None => validate::status("status", None),
    };
    let (uuid, status) = (
        validate::order_id("orderId", Some(&decode_path(&id))),
        status,
    )
        .collect()?;
    let order = service::apply(&state.db, uuid, Edit::Status(status)).await?;
    Ok(changed(&order, &state))
}

/// `PATCH /orders/{orderId}/fulfillment` body: at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FulfillmentBody {
    #[schema(value_type = Option<String>, format = DateTime)]
    fulfillment_date: Option<Text>,
    #[schema(value_type = Option<String>)]
    pickup_location: Option<Text>,
    #[schema(value_type = Option<String>)]
    instructions: Option<Text>,
}

/// The route of [`update_fulfillment()`].
pub const UPDATE_FULFILLMENT: Route = Route::patch("/orders/{orderId}/fulfillment");

/// `PATCH /orders/{orderId}/fulfillment` `{ fulfillmentDate?, pickupLocation?, instructions? }`
#[utoipa::path(
    patch,
    path = UPDATE_FULFILLMENT.path,
    operation_id = "updateFulfillment",
    summary = "Merge fulfillment details (at least one field)",
    security(("bearerAuth" = ["order:write"])),
    params(OrderId),
    request_body = FulfillmentBody,
    responses(Changed, ReadErrors, NotFound, BodyErrors)
)]
pub fn update_fulfillment(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "fulfillment")
        .and(warp::patch())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_changes(state))
        .and_then(answer_update_fulfillment)
        .boxed()
}

/// Answers [`update_fulfillment()`].
async fn answer_update_fulfillment(
    id: String,
    body: FulfillmentBody,
    state: AppState,
) -> Result<Response, Rejection> {
    let date = optional_text("fulfillmentDate", body.fulfillment_date.as_ref())
        .and_then(|d| validate::optional_instant("fulfillmentDate", d.as_deref()));
    let pickup = optional_text("pickupLocation", body.pickup_location.as_ref());
    let instructions = optional_text("instructions", body.instructions.as_ref());
    let any_given = body.fulfillment_date.is_some()
        || body.pickup_location.is_some()
        || body.instructions.is_some();
    let (uuid, update) = validate::fulfillment_update(
        validate::order_id("orderId", Some(&decode_path(&id))),
        date,
        pickup,
        instructions,
        any_given,
    )?;
    let order = service::apply(&state.db, uuid, Edit::Fulfillment(&update)).await?;
    Ok(changed(&order, &state))
}

/// `POST /orders/{orderId}/cancel` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CancelBody {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 10_000)]
    reason: Option<Text>,
}

/// `POST /orders/{orderId}/notes` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NoteBody {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 10_000)]
    note: Option<Text>,
}

/// The order id and the one required text field of the cancel and notes bodies.
fn id_and_text(
    id: &str,
    field: &str,
    text: Option<&Text>,
) -> Result<(uuid::Uuid, String), ApiError> {
    validate::id_and_text(
        validate::order_id("orderId", Some(&decode_path(id))),
        field,
        optional_text(field, text),
    )
}

/// The route of [`cancel()`].
pub const CANCEL: Route = Route::post("/orders/{orderId}/cancel");

/// `POST /orders/{orderId}/cancel` `{ "reason" }`
#[utoipa::path(
    post,
    path = CANCEL.path,
    operation_id = "cancelOrder",
    summary = "Cancel the order (from CREATED, PAID or PROCESSING)",
    security(("bearerAuth" = ["order:write"])),
    params(OrderId),
    request_body = CancelBody,
    responses(Changed, ReadErrors, NotFound, BodyErrors)
)]
pub fn cancel(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "cancel")
        .and(warp::post())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_changes(state))
        .and_then(answer_cancel)
        .boxed()
}

/// Answers [`cancel()`].
async fn answer_cancel(
    id: String,
    body: CancelBody,
    state: AppState,
) -> Result<Response, Rejection> {
    let (uuid, reason) = id_and_text(&id, "reason", body.reason.as_ref())?;
    let order = service::apply(&state.db, uuid, Edit::Cancel(&reason)).await?;
    Ok(changed(&order, &state))
}

/// The route of [`add_note()`].
pub const ADD_NOTE: Route = Route::post("/orders/{orderId}/notes");

/// `POST /orders/{orderId}/notes` `{ "note" }`
#[utoipa::path(
    post,
    path = ADD_NOTE.path,
    operation_id = "addOrderNote",
    summary = "Append a note to the fulfillment instructions",
    security(("bearerAuth" = ["order:write"])),
    params(OrderId),
    request_body = NoteBody,
    responses(Changed, ReadErrors, NotFound, BodyErrors)
)]
pub fn add_note(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("orders" / String / "notes")
        .and(warp::post())
        .and(write(state))
        .and(json_body(state.max_body_bytes))
        .and(with_changes(state))
        .and_then(answer_add_note)
        .boxed()
}

/// Answers [`add_note()`].
async fn answer_add_note(
    id: String,
    body: NoteBody,
    state: AppState,
) -> Result<Response, Rejection> {
    let (uuid, note) = id_and_text(&id, "note", body.note.as_ref())?;
    let order = service::apply(&state.db, uuid, Edit::Note(&note)).await?;
    Ok(changed(&order, &state))
}

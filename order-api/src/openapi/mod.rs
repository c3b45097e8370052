//! The OpenAPI 3.1 document of the REST API, derived from the code: each route's
//! `#[utoipa::path]` annotation sits on its filter in [`crate::routes`] (path taken from its
//! [`crate::routes::Route`]), the query and body types there carry their constraints, and
//! [`schemas`] describes the bodies order-api answers with but does not define. Built once,
//! served as the same bytes; a test checks that it lists exactly the routes of
//! [`crate::routes::ROUTES`].

pub mod schemas;

use std::sync::LazyLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, Schema};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi};

use crate::routes::{changes, graphql, ops, orders};
use schemas::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order-api",
        description = "Orders of orderdb: reads compatible with the existing order-service, plus \
                       status, fulfillment, cancel and note writes. Every error body has the \
                       shape of the Error schema."
    ),
    servers((url = "/")),
    security(("bearerAuth" = ["order:read"])),
    paths(
        orders::search,
        orders::order_by_id,
        orders::order_by_number,
        orders::orders_by_store,
        orders::orders_by_customer,
        changes::update_status,
        changes::update_fulfillment,
        changes::cancel,
        changes::add_note,
        graphql::graphql_post,
        graphql::graphiql,
        ops::documented::live,
        ops::documented::ready,
        ops::documented::metrics,
        ops::documented::actuator_health,
        ops::documented::actuator_liveness,
        ops::documented::actuator_readiness,
        ops::documented::actuator_info,
        ops::documented::actuator_prometheus,
        ops::openapi,
    ),
    components(schemas(
        schemas::Order,
        schemas::OrderStatus,
        schemas::FulfillmentType,
        schemas::PaymentStatus,
        schemas::LineItem,
        schemas::AppliedDiscount,
        schemas::CustomerSnapshot,
        schemas::DeliveryAddress,
        schemas::FulfillmentDetails,
        schemas::ErrorBody,
        schemas::Health,
        orders::SearchReply,
    )),
    modifiers(&BearerAuth, &AtLeastOneField)
)]
struct Api;

/// `minProperties: 1` on the fulfillment body (at least one field). Set here because
/// utoipa-gen 5.5 writes the derive's `min_properties` as `maxProperties`.
struct AtLeastOneField;

impl Modify for AtLeastOneField {
    fn modify(&self, openapi: &mut Document) {
        let schema = openapi
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("FulfillmentBody"));
        if let Some(RefOr::T(Schema::Object(body))) = schema {
            body.min_properties = Some(1);
        }
    }
}

/// The `bearerAuth` scheme the operations' `security` name: a JWT in `Authorization: Bearer`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT (RS256/ES256)".to_owned());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearerAuth", SecurityScheme::Http(scheme));
    }
}

/// The document as served by `GET /openapi.json`.
pub static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    // Serializing plain maps, strings and numbers to a String cannot fail.
    #[allow(clippy::expect_used)]
    Api::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

/// The `{orderId}` path segment: an order's UUID.
#[derive(IntoParams)]
#[into_params(names("orderId"), parameter_in = Path)]
#[allow(
    dead_code,
    reason = "describes a segment read by routes::orders::decode_path"
)]
pub struct OrderId(#[param(value_type = String, format = Uuid)] ());

/// The `X-Consistency-Token` header a read accepts.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(
    dead_code,
    reason = "describes a header read by routes::consistency_token"
)]
pub struct ConsistencyToken {
    /// Opaque token answered by a successful change; send the latest one back unchanged on
    /// later reads to see your own changes even when reads are served by a replica that is
    /// behind. A malformed token is a 400.
    // The pattern is the one `replica::parse_token` accepts (a WAL position, `16/B374D848`).
    #[param(
        rename = "X-Consistency-Token",
        value_type = String,
        required = false,
        pattern = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"
    )]
    token: Option<String>,
}

/// The errors every read can answer with.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "describes responses built by crate::error")]
pub enum ReadErrors {
    /// Validation failed or malformed request
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Missing or invalid bearer token
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// Token lacks the required scope
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Database unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The updated order
#[derive(IntoResponses)]
#[response(
    status = 200,
    headers((
        "X-Consistency-Token" = String,
        description = "The consistency token of this change: send it back as the \
                       X-Consistency-Token header of later reads to see the change in them."
    ))
)]
#[allow(dead_code, reason = "describes responses built by routes::changes")]
pub struct Changed(schemas::Order);

/// Order not found
#[derive(IntoResponses)]
#[response(status = 404)]
#[allow(dead_code, reason = "describes responses built by crate::error")]
pub struct NotFound(ErrorBody);

/// The errors of a request body: too large, or not declared JSON.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "describes responses built by crate::error")]
pub enum BodyErrors {
    /// Request body too large
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Content-Type is not application/json
    #[response(status = 415)]
    NotJson(ErrorBody),
}

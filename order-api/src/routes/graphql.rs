//! GraphQL over HTTP: `POST /graphql` and the GraphiQL page.

use async_graphql_warp::GraphQLResponse;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::body::{bounded_body, json_content_type};
use super::{consistency_token, with_state, Route};
use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::graphql::{Answer, OrderSchema, RequestErrors};
use crate::openapi::schemas::ErrorBody;
use crate::openapi::{schemas, BodyErrors};
use crate::AppState;

/// The route of [`graphql_post()`].
pub const GRAPHQL: Route = Route::post("/graphql");

/// `POST /graphql`: any valid token; each field checks its own scope. Reads follow the
/// request's `X-Consistency-Token`; a document holding a mutation runs wholly on the primary.
/// The body has the same content type check and size limit as REST bodies (chunked bodies
/// included), and is read as a GraphQL request the way async-graphql-warp reads one.
#[utoipa::path(
    post,
    path = GRAPHQL.path,
    operation_id = "graphql",
    summary = "GraphQL endpoint (schema: docs/compatibility.md §4); queries need order:read, mutations order:write",
    security(("bearerAuth" = [])),
    request_body = schemas::GraphQlRequest,
    responses(
        (
            status = 200,
            description = "GraphQL response (errors carry extensions.classification)",
            body = Object
        ),
        (status = 400, description = "Validation failed or malformed request", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        BodyErrors
    )
)]
pub fn graphql_post(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("graphql")
        .and(warp::post())
        .and(auth::authenticate(state.auth.clone()))
        .and(json_content_type())
        .and(consistency_token())
        .and(graphql_request(state))
        .and(with_state(state))
        .and_then(answer)
        .boxed()
}

/// Answers [`graphql_post`]: the request read from the body, run as `principal`.
async fn answer(
    principal: Principal,
    after: Option<u64>,
    (_, request): (OrderSchema, async_graphql::Request),
    state: AppState,
) -> Result<Response, Rejection> {
    if let Err(blank) = order_store::FieldError::required("query", Some(&request.query)) {
        return Err(ApiError::Validation(vec![blank]).into());
    }
    let (answer, token) = state
        .graphql
        .execute(request, principal, &state.db, after)
        .await;
    let mut response = match answer {
        Answer::Executed(response) => GraphQLResponse::from(response).into_response(),
        Answer::RequestError(errors) => {
            warp::reply::json(&RequestErrors { errors }).into_response()
        }
    };
    super::changes::with_consistency_token(&mut response, token);
    Ok(response)
}

/// The body of `POST /graphql` as one GraphQL request, with the schema to run it on.
fn graphql_request(
    state: &AppState,
) -> impl Filter<Extract = ((OrderSchema, async_graphql::Request),), Error = Rejection> + Clone {
    let schema = state.schema().clone();
    bounded_body(state.max_body_bytes).and_then(move |bytes: Vec<u8>| {
        let schema = schema.clone();
        async move {
            async_graphql::http::receive_json(bytes.as_slice())
                .await
                .map(|request| (schema, request))
                .map_err(|e| warp::reject::custom(async_graphql_warp::GraphQLBadRequest(e)))
        }
    })
}

/// The route of [`graphiql()`].
pub const GRAPHIQL: Route = Route::get("/graphiql");

/// `GET /graphiql`: the GraphiQL page (no token: it holds no data).
#[utoipa::path(
    get,
    path = GRAPHIQL.path,
    operation_id = "graphiql",
    summary = "GraphiQL page",
    security(()),
    responses((status = 200, description = "HTML page", body = String, content_type = "text/html"))
)]
pub fn graphiql() -> BoxedFilter<(Response,)> {
    // Built once: the page is the same for every request.
    let html = async_graphql::http::GraphiQLSource::build()
        .endpoint("/graphql")
        .finish();
    warp::path!("graphiql")
        .and(warp::get())
        .map(move || warp::reply::Reply::into_response(warp::reply::html(html.clone())))
        .boxed()
}

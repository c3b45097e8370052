//! The GraphQL API (docs/compatibility.md, "GraphQL"), on async-graphql with
//! async-graphql-warp as the transport. Two things are added around the executor, in one
//! place each: a cache of parsed documents, and the specification's field-error handling
//! ([`nulls`]), which async-graphql does not do by itself.

mod nulls;
mod resolvers;
mod types;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{EmptySubscription, ErrorExtensions, Schema, Value, Variables};
use async_graphql_warp::GraphQLResponse;
use tracing::Instrument as _;
use warp::reply::{Reply, Response};
use warp::Rejection;

pub use resolvers::{Mutation, Query, MAX_CUSTOMER_ORDERS};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::validate;
use crate::AppState;

pub type OrderSchema = Schema<Query, Mutation, EmptySubscription>;

/// Deepest selection accepted. The schema has no cycles, so real queries stay under 6; the
/// limit mostly bounds introspection, with room for GraphiQL's own introspection query.
pub const MAX_DEPTH: usize = 15;
/// Most fields one query may select (aliases count), so that one request cannot multiply
/// the work of a page of orders.
pub const MAX_COMPLEXITY: usize = 1000;

pub fn schema(db: crate::db::Db) -> OrderSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .data(db)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The schema in SDL, as `order-api/schema.graphql` keeps it.
pub fn schema_sdl() -> String {
    Schema::build(Query, Mutation, EmptySubscription)
        .finish()
        .sdl()
}

/// The schema with what the transport adds around it.
pub struct Executor {
    schema: OrderSchema,
    documents: DocumentCache,
    types: nulls::FieldTypes,
}

impl Executor {
    pub fn new(schema: OrderSchema) -> Self {
        Self {
            types: nulls::FieldTypes::of(&schema),
            schema,
            documents: DocumentCache::default(),
        }
    }

    pub fn schema(&self) -> &OrderSchema {
        &self.schema
    }

    /// Runs one request as `principal`: exact numbers in, spec field errors out.
    async fn execute(
        &self,
        mut request: async_graphql::Request,
        principal: Principal,
    ) -> async_graphql::Response {
        request.variables = Variables::from_value(exact_numbers(
            std::mem::take(&mut request.variables).into_value(),
        ));
        let document = self.documents.parsed(&request.query);
        let operation_name = request.operation_name.clone();
        if let Some(document) = &document {
            request.set_parsed_query(document.clone());
        }
        let span = operation_span(document.as_ref(), operation_name.as_deref());
        let mut response = self
            .schema
            .execute(request.data(principal))
            .instrument(span)
            .await;
        for error in &mut response.errors {
            // Errors async-graphql raises itself (syntax, unknown fields, limits) are the
            // client's.
            let extensions = error.extensions.get_or_insert_with(Default::default);
            if extensions.get("classification").is_none() {
                extensions.set("classification", "BAD_REQUEST");
            }
        }
        if let Some(document) = &document {
            nulls::propagate(
                &mut response,
                document,
                operation_name.as_deref(),
                &self.types,
            );
        }
        response
    }
}

/// The span of one GraphQL operation, named as OpenTelemetry's GraphQL conventions say
/// (`query OrderById`, or the bare type of an anonymous operation), and the same operation
/// recorded on the request's span so that traces can be searched by it.
fn operation_span(document: Option<&ExecutableDocument>, wanted: Option<&str>) -> tracing::Span {
    let operation = document.and_then(|document| {
        document
            .operations
            .iter()
            .find(|(name, _)| wanted.is_none() || name.map(async_graphql::Name::as_str) == wanted)
    });
    let Some((name, operation)) = operation else {
        return tracing::debug_span!("graphql", otel.name = "GraphQL Operation");
    };
    let kind = operation.node.ty.to_string();
    let name = name.map(|n| n.as_str().to_owned());
    let request = tracing::Span::current();
    request.record("graphql.operation.type", kind.as_str());
    if let Some(name) = &name {
        request.record("graphql.operation.name", name.as_str());
    }
    if let Some(name) = &name {
        tracing::debug_span!(
            "graphql",
            otel.name = %format_args!("{kind} {name}"),
            graphql.operation.type = kind.as_str(),
            graphql.operation.name = name.as_str(),
        )
    } else {
        tracing::debug_span!(
            "graphql",
            otel.name = kind.as_str(),
            graphql.operation.type = kind.as_str(),
        )
    }
}

/// `POST /graphql`: the request as async-graphql-warp read it, run as `principal`.
pub async fn handle(
    principal: Principal,
    (_, request): (OrderSchema, async_graphql::Request),
    state: AppState,
) -> Result<Response, Rejection> {
    if request.query.trim().is_empty() {
        return Err(ApiError::Validation(vec![order_store::FieldError::new(
            "query",
            validate::REQUIRED,
        )])
        .into());
    }
    let response = state.graphql.execute(request, principal).await;
    Ok(GraphQLResponse::from(response).into_response())
}

/// The one rendering of [`ApiError`] as a GraphQL error (classification, validation map).
pub fn api_error(error: &ApiError) -> async_graphql::Error {
    let classification = error.classification();
    let validation = match error {
        ApiError::Validation(errors) => Some(Value::Object(
            errors
                .iter()
                .map(|e| {
                    (
                        async_graphql::Name::new(&e.field),
                        Value::String(e.message.clone()),
                    )
                })
                .collect(),
        )),
        _ => None,
    };
    let message = match error {
        ApiError::Validation(_) => "Validation failed".to_owned(),
        ApiError::Forbidden(_) => "Access denied".to_owned(),
        other => other.public_message(),
    };
    async_graphql::Error::new(message).extend_with(move |_, e| {
        e.set("classification", classification);
        if let Some(validation) = &validation {
            e.set("validationErrors", validation.clone());
        }
    })
}

/// The field's scope, else `FORBIDDEN` for this field only.
fn require(ctx: &async_graphql::Context<'_>, scope: &'static str) -> async_graphql::Result<()> {
    match ctx.data_opt::<Principal>() {
        Some(p) if p.has_scope(scope) => Ok(()),
        _ => Err(api_error(&ApiError::Forbidden(scope))),
    }
}

/// serde_json's `arbitrary_precision` (on for exact money) reads every JSON number as a
/// one-key object; async-graphql's variables get the number back, exactly.
fn exact_numbers(value: Value) -> Value {
    const NUMBER_TOKEN: &str = "$serde_json::private::Number";
    match value {
        Value::Object(map) => {
            if map.len() == 1 {
                if let Some(Value::String(text)) = map.get(NUMBER_TOKEN) {
                    if let Ok(number) = text.parse::<serde_json::Number>() {
                        return Value::Number(number);
                    }
                }
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, exact_numbers(v)))
                    .collect(),
            )
        }
        Value::List(items) => Value::List(items.into_iter().map(exact_numbers).collect()),
        other => other,
    }
}

/// Parsed GraphQL documents by query text. Clients send the same few queries over and over, and
/// parsing the text was a third of the API's CPU under the GraphQL benchmark
/// (docs/BENCHMARKS.md); validation and limits still run on every request.
#[derive(Default)]
struct DocumentCache {
    documents: Mutex<HashMap<String, ExecutableDocument>>,
}

impl DocumentCache {
    /// Distinct query texts kept; past it the cache starts over, so clients that send a new
    /// text every time cannot grow it.
    const CAPACITY: usize = 256;

    /// The parsed document, or `None` for a syntax error (the executor reports it).
    fn parsed(&self, query: &str) -> Option<ExecutableDocument> {
        if let Some(document) = self.lock().get(query) {
            return Some(document.clone());
        }
        let document = async_graphql::parser::parse_query(query).ok()?;
        let mut documents = self.lock();
        if documents.len() >= Self::CAPACITY {
            documents.clear();
        }
        documents.insert(query.to_owned(), document.clone());
        Some(document)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ExecutableDocument>> {
        // A poisoned lock only means another request panicked while holding it; the map is
        // still a valid map, so it keeps serving.
        self.documents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

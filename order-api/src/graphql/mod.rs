//! The GraphQL API (docs/compatibility.md, "GraphQL"), on async-graphql with
//! async-graphql-warp as the transport. Two things are added around the executor, in one
//! place each: a cache of parsed documents, and the specification's field-error handling
//! ([`nulls`]), which async-graphql does not do by itself.

mod nulls;
mod resolvers;
pub(crate) mod types;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::parser::types::{BaseType, ExecutableDocument, OperationType};
use async_graphql::{
    EmptySubscription, ErrorExtensions, Schema, ServerError, ValidationResult, Value, Variables,
};
use tracing::Instrument as _;

pub use resolvers::{Mutation, Query, MAX_CUSTOMER_ORDERS};

use crate::auth::Principal;
use crate::db::Db;
use crate::error::ApiError;

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
        .extension(ValidationCache::default())
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

    /// Runs one request as `principal`: exact numbers in, spec field errors out. Its database
    /// is `db` for reads with the consistency token `after`, or, when the document holds a
    /// mutation, `db` for changes in every operation; the second value is the consistency
    /// token of the changes that succeeded.
    pub(crate) async fn execute(
        &self,
        mut request: async_graphql::Request,
        principal: Principal,
        db: &Db,
        after: Option<u64>,
    ) -> (Answer, Option<String>) {
        request.variables = Variables::from_value(exact_numbers(
            std::mem::take(&mut request.variables).into_value(),
        ));
        let document = self.documents.parsed(&request.query);
        let operation_name = request.operation_name.clone();
        let holds_mutation = document.as_ref().is_some_and(|document| {
            document
                .operations
                .iter()
                .any(|(_, operation)| operation.node.ty == OperationType::Mutation)
        });
        let span = operation_span(document.as_deref(), operation_name.as_deref());
        let parsed = document.is_some();
        if let Some(document) = &document {
            if let Some(key) = validation_key(
                &request.query,
                operation_name.as_deref(),
                document,
                &request.variables,
            ) {
                request = request.data(key);
            }
            // The executor takes a document of its own: the one copy per request.
            request.set_parsed_query(ExecutableDocument::clone(document));
        }
        let db = if holds_mutation {
            db.for_changes()
        } else {
            db.for_reads(after)
        };
        let mut response = self
            .schema
            .execute(request.data(principal).data(db.clone()))
            .instrument(span)
            .await;
        // A request error stops the request before execution: every field error carries the
        // path of its field, a request error has none, and no data exists yet.
        let executed = response.data != Value::Null
            || response.errors.is_empty()
            || response.errors.iter().any(|error| !error.path.is_empty());
        // Errors async-graphql raises itself are the client's, classified as graphql-java
        // classifies them: a document that does not parse is `InvalidSyntax`, one that fails
        // validation (unknown fields, wrong variables, unknown operation, the depth and
        // complexity limits) `ValidationError`; whatever it refuses once execution started
        // is `BAD_REQUEST`, as the resolvers' own refusals are.
        let classification = match (parsed, executed) {
            (false, false) => "InvalidSyntax",
            (true, false) => "ValidationError",
            (_, true) => "BAD_REQUEST",
        };
        for error in &mut response.errors {
            let extensions = error.extensions.get_or_insert_with(Default::default);
            if extensions.get("classification").is_none() {
                extensions.set("classification", classification);
            }
        }
        if !executed {
            // Nothing ran, so nothing changed: no consistency token.
            return (Answer::RequestError(response.errors), None);
        }
        if let Some(document) = document.as_deref() {
            nulls::propagate(
                &mut response,
                document,
                operation_name.as_deref(),
                &self.types,
            );
        }
        (Answer::Executed(response), db.consistency_token())
    }
}

/// What a request is answered with. The GraphQL specification ("Response") leaves `data` out
/// when an error stopped the request before execution started, and has it (possibly `null`)
/// once execution ran; clients tell the two apart by it.
pub(crate) enum Answer {
    Executed(async_graphql::Response),
    RequestError(Vec<ServerError>),
}

/// The body of an [`Answer::RequestError`]: the errors, and no `data` key at all.
#[derive(serde::Serialize)]
pub(crate) struct RequestErrors {
    pub(crate) errors: Vec<ServerError>,
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
    // Static names and borrowed text: nothing allocated per request when spans are off.
    let kind = match operation.node.ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    };
    let name = name.map(async_graphql::Name::as_str);
    let request = tracing::Span::current();
    request.record("graphql.operation.type", kind);
    if let Some(name) = name {
        request.record("graphql.operation.name", name);
    }
    if let Some(name) = name {
        tracing::debug_span!(
            "graphql",
            otel.name = %format_args!("{kind} {name}"),
            graphql.operation.type = kind,
            graphql.operation.name = name,
        )
    } else {
        tracing::debug_span!(
            "graphql",
            otel.name = kind,
            graphql.operation.type = kind,
        )
    }
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
    async_graphql::Error::new(error.graphql_message()).extend_with(move |_, e| {
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
    documents: Mutex<HashMap<String, Arc<ExecutableDocument>>>,
}

impl DocumentCache {
    /// Distinct query texts kept; past it the cache starts over, so clients that send a new
    /// text every time cannot grow it.
    const CAPACITY: usize = 256;

    /// The parsed document, or `None` for a syntax error (the executor reports it).
    fn parsed(&self, query: &str) -> Option<Arc<ExecutableDocument>> {
        if let Some(document) = self.lock().get(query) {
            return Some(document.clone());
        }
        let document = Arc::new(async_graphql::parser::parse_query(query).ok()?);
        let mut documents = self.lock();
        if documents.len() >= Self::CAPACITY {
            documents.clear();
        }
        documents.insert(query.to_owned(), document.clone());
        Some(document)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<ExecutableDocument>>> {
        // A poisoned lock only means another request panicked while holding it; the map is
        // still a valid map, so it keeps serving.
        self.documents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a validation result depends on: the document's text, the operation, and the variables
/// (async-graphql checks variable values against the arguments they are passed to, and
/// complexity and depth may follow `@skip`/`@include` on them). Values of variables declared
/// `ID` or `String` (not lists) only need to be strings there, so any string stands for any
/// other: `order(id: $id)` is validated once, whichever id it asks for. Every other value is
/// part of the key as it is.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ValidationKey(String);

fn validation_key(
    query: &str,
    operation_name: Option<&str>,
    document: &ExecutableDocument,
    variables: &Variables,
) -> Option<ValidationKey> {
    let mut operations = document.operations.iter();
    let (_, operation) = if let Some(wanted) = operation_name {
        operations.find(|(name, _)| name.is_some_and(|n| n.as_str() == wanted))?
    } else {
        let first = operations.next()?;
        if operations.next().is_some() {
            return None;
        }
        first
    };
    let string_like = |name: &str| {
        operation
            .node
            .variable_definitions
            .iter()
            .any(|definition| {
                definition.node.name.node.as_str() == name
                    && matches!(
                        &definition.node.var_type.node.base,
                        BaseType::Named(ty) if ty.as_str() == "ID" || ty.as_str() == "String"
                    )
            })
    };
    let mut key = String::with_capacity(query.len() + 64);
    key.push_str(query);
    key.push('\0');
    if let Some(name) = operation_name {
        key.push_str(name);
    }
    for (name, value) in variables.iter() {
        key.push('\0');
        key.push_str(name.as_str());
        key.push('=');
        if matches!(value, Value::String(_)) && string_like(name.as_str()) {
            // Not a GraphQL literal (those quote strings), so it cannot be confused with one.
            key.push('*');
        } else {
            let _ = write!(key, "{value}");
        }
    }
    Some(ValidationKey(key))
}

/// Successful validation results by [`ValidationKey`], so that a document is validated (rules,
/// depth and complexity limits) once per operation and kind of variables rather than on every
/// request: validation was the top frame of the GraphQL benchmark's profile. Only successes are
/// kept: a document that fails validation (limits included) is validated, and refused, every
/// time.
#[derive(Clone, Default)]
struct ValidationCache(Arc<ValidationResults>);

#[derive(Default)]
struct ValidationResults {
    results: Mutex<HashMap<ValidationKey, ValidationResult>>,
}

impl ValidationResults {
    /// Keys kept; past it the cache starts over, like [`DocumentCache`].
    const CAPACITY: usize = 256;

    fn lock(&self) -> MutexGuard<'_, HashMap<ValidationKey, ValidationResult>> {
        self.results.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ExtensionFactory for ValidationCache {
    fn create(&self) -> Arc<dyn Extension> {
        self.0.clone()
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ValidationResults {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let key = ctx.data_opt::<ValidationKey>();
        if let Some(key) = key {
            if let Some(result) = self.lock().get(key) {
                return Ok(*result);
            }
        }
        let result = next.run(ctx).await?;
        if let Some(key) = key {
            let mut results = self.lock();
            if results.len() >= Self::CAPACITY {
                results.clear();
            }
            results.insert(ValidationKey(key.0.clone()), result);
        }
        Ok(result)
    }
}

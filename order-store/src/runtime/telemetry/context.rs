//! Trace context as the rest of the code uses it: the span of a database call, the span context
//! of an incoming W3C `traceparent` (for links), and the current span's `traceparent` and trace
//! id (for outgoing events and error bodies).

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The span of one database call on `orders` (OpenTelemetry's database conventions): named
/// after the SQL operation (`SELECT orders`), carrying the operation and never the statement's
/// parameters. `debug`, like every span that is only for traces. The caller records
/// `otel.status_code = "ERROR"` when the call fails.
pub fn db_span(operation: &'static str, rows: Option<usize>) -> tracing::Span {
    tracing::debug_span!(
        "db",
        otel.name = %format_args!("{operation} orders"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system = "postgresql",
        db.system.name = "postgresql",
        db.operation.name = operation,
        db.collection.name = "orders",
        db.operation.batch.size = rows,
    )
}

/// The remote span context of a W3C `traceparent` (and `tracestate`), if valid. Used for links,
/// which need a span context rather than a whole context.
pub fn remote_span_context(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| span_context.clone())
}

/// The W3C `traceparent` of the current span, when it is traced: what an event made in this
/// span carries so that its consumers' traces link back to the request that made it.
pub fn current_traceparent() -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// The trace id (32 hex digits) of the current span, when one is being traced.
pub fn current_trace_id() -> Option<String> {
    opentelemetry::Context::map_current(|context| {
        let span = context.span();
        let span_context = span.span_context();
        span_context
            .is_valid()
            .then(|| span_context.trace_id().to_string())
    })
}

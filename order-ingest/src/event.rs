//! Decoding one stream entry's `payload` into an order.
//!
//! The CloudEvent envelope is decoded here by hand rather than with cloudevents-sdk: the SDK
//! parses `time` as strict RFC 3339 and rejects the whole event when it fails, but checkout
//! writes `time` with Java's `OffsetDateTime.toString()`, which drops the seconds when they are
//! zero (`2025-12-13T10:15Z`). docs/compatibility.md §1.2 says such an event, or one without `subject`, is
//! still a valid order, and rejecting it would dead-letter a real sale. So only what identifies
//! an event (`specversion`, `id`, `source`, `type`) is required, optional attributes are not
//! interpreted at all, and `data` is kept as raw JSON so that money reaches
//! [`NewOrder`]'s exact-decimal parser as its original text.

use opentelemetry::trace::SpanContext;
use order_store::NewOrder;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Why an entry was dead-lettered: the stable, documented `errorClass` of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// `payload` is not UTF-8 JSON.
    InvalidJson,
    /// JSON, but not a CloudEvents 1.0 object with `id`, `source` and `type`.
    NotCloudEvent,
    /// An order event without `data.order`.
    MissingOrder,
    /// `data.order` does not have the Order shape (missing field, wrong type, unknown enum value).
    InvalidOrder,
    /// A value does not fit its column (too long, out of range, more than two decimals).
    InvalidValue,
    /// Another order (another id) already holds this order number.
    OrderNumberConflict,
    /// The store refused the order for a reason it does not classify.
    StoreRejected,
    /// Delivered more than `--max-deliveries` times without being acknowledged.
    MaxDeliveriesExceeded,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::InvalidJson,
        ErrorClass::NotCloudEvent,
        ErrorClass::MissingOrder,
        ErrorClass::InvalidOrder,
        ErrorClass::InvalidValue,
        ErrorClass::OrderNumberConflict,
        ErrorClass::StoreRejected,
        ErrorClass::MaxDeliveriesExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::InvalidJson => "invalid_json",
            ErrorClass::NotCloudEvent => "not_cloudevent",
            ErrorClass::MissingOrder => "missing_order",
            ErrorClass::InvalidOrder => "invalid_order",
            ErrorClass::InvalidValue => "invalid_value",
            ErrorClass::OrderNumberConflict => "order_number_conflict",
            ErrorClass::StoreRejected => "store_rejected",
            ErrorClass::MaxDeliveriesExceeded => "max_deliveries_exceeded",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<order_store::orders::RejectionKind> for ErrorClass {
    fn from(kind: order_store::orders::RejectionKind) -> Self {
        match kind {
            order_store::orders::RejectionKind::InvalidValue => ErrorClass::InvalidValue,
            order_store::orders::RejectionKind::OrderNumberTaken => ErrorClass::OrderNumberConflict,
        }
    }
}

/// A payload that can never become an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub class: ErrorClass,
    pub message: String,
}

impl DecodeError {
    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

/// Why an entry was acknowledged without doing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// No `payload` field: the publisher's `init` entry, or anything else that is not an event.
    NoPayload,
    /// An event of another type sharing the stream.
    OtherType(String),
}

impl Skip {
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::NoPayload => "no_payload",
            Skip::OtherType(_) => "other_event_type",
        }
    }
}

/// An order event, ready for the batch insert.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderEvent {
    pub event_id: String,
    pub checkout_session_id: Option<String>,
    pub order: NewOrder,
    /// The producer's span, from the CloudEvents distributed-tracing extension
    /// (`traceparent`, `tracestate`), when the event carries a valid one.
    pub trace_context: Option<SpanContext>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Order(Box<OrderEvent>),
    Skip(Skip),
}

/// The envelope's attributes. Each is read as any JSON value so that a wrong type is reported
/// as "not a CloudEvent" with the attribute's name rather than as a serde position.
#[derive(Deserialize)]
struct Envelope<'a> {
    specversion: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
    source: Option<serde_json::Value>,
    #[serde(rename = "type")]
    event_type: Option<serde_json::Value>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    /// The distributed-tracing extension. Read as any value: a malformed one only means no
    /// link, never a dead letter.
    traceparent: Option<serde_json::Value>,
    tracestate: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    #[serde(default)]
    checkout_session_id: Option<serde_json::Value>,
    #[serde(borrow, default)]
    order: Option<&'a RawValue>,
}

fn required_string(value: Option<serde_json::Value>, name: &str) -> Result<String, DecodeError> {
    match value {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s),
        Some(serde_json::Value::String(_)) => Err(DecodeError::new(
            ErrorClass::NotCloudEvent,
            format!("CloudEvent attribute `{name}` is empty"),
        )),
        Some(_) => Err(DecodeError::new(
            ErrorClass::NotCloudEvent,
            format!("CloudEvent attribute `{name}` is not a string"),
        )),
        None => Err(DecodeError::new(
            ErrorClass::NotCloudEvent,
            format!("CloudEvent attribute `{name}` is missing"),
        )),
    }
}

/// Decodes an entry's `payload` (`None` when the entry has no such field).
pub fn decode(payload: Option<&[u8]>, wanted_type: &str) -> Result<Decoded, DecodeError> {
    let Some(payload) = payload else {
        return Ok(Decoded::Skip(Skip::NoPayload));
    };
    let text = std::str::from_utf8(payload).map_err(|e| {
        DecodeError::new(
            ErrorClass::InvalidJson,
            format!("payload is not UTF-8: {e}"),
        )
    })?;
    // One pass over the payload: serde_json tells a syntax error ("not JSON") from valid JSON
    // of the wrong shape ("not a CloudEvent") by the error's category.
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| {
        if matches!(
            e.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        ) {
            DecodeError::new(ErrorClass::InvalidJson, format!("payload is not JSON: {e}"))
        } else {
            DecodeError::new(
                ErrorClass::NotCloudEvent,
                format!("payload is not a CloudEvent object: {e}"),
            )
        }
    })?;
    let event_type = required_string(envelope.event_type, "type")?;
    // Another type is not ours to judge, however odd the rest of its envelope.
    if event_type != wanted_type {
        return Ok(Decoded::Skip(Skip::OtherType(event_type)));
    }
    let specversion = required_string(envelope.specversion, "specversion")?;
    if specversion != "1.0" {
        return Err(DecodeError::new(
            ErrorClass::NotCloudEvent,
            format!("unsupported CloudEvents specversion {specversion:?}"),
        ));
    }
    let event_id = required_string(envelope.id, "id")?;
    required_string(envelope.source, "source")?;
    let data = envelope
        .data
        .filter(|d| d.get() != "null")
        .ok_or_else(|| DecodeError::new(ErrorClass::MissingOrder, "event has no `data`"))?;
    let data: Data = serde_json::from_str(data.get()).map_err(|e| {
        DecodeError::new(
            ErrorClass::MissingOrder,
            format!("`data` is not an object with `order`: {e}"),
        )
    })?;
    let order = data
        .order
        .filter(|o| o.get() != "null")
        .ok_or_else(|| DecodeError::new(ErrorClass::MissingOrder, "`data.order` is missing"))?;
    let order: NewOrder = serde_json::from_str(order.get()).map_err(|e| {
        DecodeError::new(
            ErrorClass::InvalidOrder,
            format!("`data.order` is not a valid Order: {e}"),
        )
    })?;
    let checkout_session_id = match data.checkout_session_id {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    let trace_context = match (envelope.traceparent, envelope.tracestate) {
        (Some(serde_json::Value::String(parent)), state) => {
            let state = match &state {
                Some(serde_json::Value::String(s)) => Some(s.as_str()),
                _ => None,
            };
            order_store::runtime::telemetry::remote_span_context(&parent, state)
        }
        _ => None,
    };
    Ok(Decoded::Order(Box::new(OrderEvent {
        event_id,
        checkout_session_id,
        order,
        trace_context,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE: &str = "org.example.checkout.OrderCompleted";

    use order_test_support::fixtures::read as fixture;

    fn class_of(payload: &str) -> ErrorClass {
        decode(Some(payload.as_bytes()), TYPE).unwrap_err().class
    }

    #[test]
    fn fixtures_decode() {
        for name in [
            "order-completed-delivery.json",
            "order-completed-immediate-minimal.json",
            "order-completed-large-amount.json",
        ] {
            let Decoded::Order(event) = decode(Some(fixture(name).as_bytes()), TYPE).unwrap()
            else {
                panic!("{name} is an order");
            };
            assert!(event.checkout_session_id.is_some(), "{name}");
        }
        assert_eq!(
            decode(Some(fixture("other-event-type.json").as_bytes()), TYPE).unwrap(),
            Decoded::Skip(Skip::OtherType(
                "org.example.checkout.CheckoutAbandoned".into()
            ))
        );
        assert_eq!(decode(None, TYPE).unwrap(), Decoded::Skip(Skip::NoPayload));
    }

    #[test]
    fn odd_optional_attributes_are_not_failures() {
        let mut event: serde_json::Value =
            serde_json::from_str(&fixture("order-completed-delivery.json")).unwrap();
        event["time"] = "2025-12-13T10:15Z".into();
        event.as_object_mut().unwrap().remove("subject");
        let text = serde_json::to_string(&event).unwrap();
        assert!(matches!(
            decode(Some(text.as_bytes()), TYPE),
            Ok(Decoded::Order(_))
        ));
        event["time"] = "not a time at all".into();
        let text = serde_json::to_string(&event).unwrap();
        assert!(matches!(
            decode(Some(text.as_bytes()), TYPE),
            Ok(Decoded::Order(_))
        ));
    }

    #[test]
    fn poison_is_classified() {
        assert_eq!(class_of("{not json"), ErrorClass::InvalidJson);
        assert_eq!(
            decode(Some(&[0xff, 0xfe]), TYPE).unwrap_err().class,
            ErrorClass::InvalidJson
        );
        assert_eq!(class_of("[1,2]"), ErrorClass::NotCloudEvent);
        assert_eq!(class_of(r#"{"id":"x"}"#), ErrorClass::NotCloudEvent);
        assert_eq!(
            class_of(&format!(
                r#"{{"specversion":"0.3","id":"x","source":"s","type":"{TYPE}"}}"#
            )),
            ErrorClass::NotCloudEvent
        );
        assert_eq!(
            class_of(&format!(
                r#"{{"specversion":"1.0","source":"s","type":"{TYPE}"}}"#
            )),
            ErrorClass::NotCloudEvent
        );
        // Another type is skipped even when its envelope is incomplete.
        assert_eq!(
            decode(Some(br#"{"type":"other"}"#), TYPE).unwrap(),
            Decoded::Skip(Skip::OtherType("other".into()))
        );
        let base = format!(r#"{{"specversion":"1.0","id":"x","source":"s","type":"{TYPE}""#);
        assert_eq!(class_of(&format!("{base}}}")), ErrorClass::MissingOrder);
        assert_eq!(
            class_of(&format!(r#"{base},"data":{{"checkoutSessionId":"c"}}}}"#)),
            ErrorClass::MissingOrder
        );
        assert_eq!(
            class_of(&format!(r#"{base},"data":{{"order":{{"id":"nope"}}}}}}"#)),
            ErrorClass::InvalidOrder
        );
        let mut event: serde_json::Value =
            serde_json::from_str(&fixture("order-completed-delivery.json")).unwrap();
        event["data"]["order"]["status"] = "TELEPORTED".into();
        assert_eq!(
            class_of(&serde_json::to_string(&event).unwrap()),
            ErrorClass::InvalidOrder
        );
    }

    #[test]
    fn money_is_exact() {
        let Decoded::Order(event) = decode(
            Some(fixture("order-completed-large-amount.json").as_bytes()),
            TYPE,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            order_store::models::money::format(&event.order.grand_total),
            "22222221.23"
        );
    }
}

//! Stream entry -> CloudEvent -> Order: whatever bytes a publisher puts in an entry, the
//! consumer's decoding must classify them (order, skip or dead letter) without panicking, and
//! an order it accepts must survive its own validation, money formatting and serialization.
//!
//! Input layout: first byte selects the mode, the rest is the payload.
//! - mode % 3 == 0: the bytes are the whole `payload` field of the entry;
//! - mode % 3 == 1: the bytes are spliced in as `data.order` of a valid envelope (reaches the
//!   Order parser quickly);
//! - mode % 3 == 2: an entry without a `payload` field (the bytes become another field).
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use order_ingest::dlq::DeadLetter;
use order_ingest::event::{decode, Decoded, ErrorClass};
use order_ingest::stream::Entry;

const TYPE: &str = "org.example.checkout.OrderCompleted";

fn entry(fields: Vec<(&str, Vec<u8>)>) -> Entry {
    let map: HashMap<String, redis::Value> = fields
        .into_iter()
        .map(|(k, v)| (k.to_owned(), redis::Value::BulkString(v)))
        .collect();
    let id = redis::streams::StreamId {
        id: "1734100000000-0".to_owned(),
        map,
        ..Default::default()
    };
    Entry::from_stream_id(&id, 1)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let payload = match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let mut p = format!(
                r#"{{"specversion":"1.0","id":"e1","source":"urn:reactive-platform:checkout-service","type":"{TYPE}","datacontenttype":"application/json","data":{{"checkoutSessionId":"cs-1","order":"#
            )
            .into_bytes();
            p.extend_from_slice(rest);
            p.extend_from_slice(b"}}");
            p
        }
        _ => {
            let e = entry(vec![("init", rest.to_vec())]);
            assert_eq!(e.payload, None);
            assert!(matches!(decode(None, TYPE), Ok(Decoded::Skip(_))));
            return;
        }
    };
    let e = entry(vec![
        ("eventId", b"e1".to_vec()),
        ("eventType", TYPE.as_bytes().to_vec()),
        ("payload", payload.clone()),
    ]);
    assert_eq!(e.payload.as_deref(), Some(&payload[..]));
    let first = decode(e.payload.as_deref(), TYPE);
    // Decoding is a pure function of the bytes: a redelivery is classified the same way.
    assert_eq!(first, decode(e.payload.as_deref(), TYPE));
    match first {
        Ok(Decoded::Order(event)) => {
            let order = &event.order;
            let valid = order.validate().is_ok();
            if valid {
                // What the store writes and the API prints must be computable for a valid order.
                for amount in [&order.subtotal, &order.grand_total] {
                    let text = order_store::models::money::format(amount);
                    assert!(text.len() <= 16, "{text}");
                }
                let json = serde_json::to_string(order).expect("a valid order serializes");
                let again: order_store::NewOrder =
                    serde_json::from_str(&json).expect("a serialized order reads back");
                assert_eq!(again.id, order.id);
            }
        }
        Ok(Decoded::Skip(_)) => {}
        Err(error) => {
            assert!(ErrorClass::ALL.contains(&error.class));
            let letter = DeadLetter::new(&e, None, error.class, error.message);
            // The dead letter keeps the payload byte for byte.
            assert_eq!(letter.payload, payload);
            let mut pipe = redis::pipe();
            letter.add_to(&mut pipe, "orders:completed:dlq");
        }
    }
});

//! Checkout's sample events (`order-completed-*.json`, `other-event-type.json`: CloudEvents as
//! published on the stream) and orders (`delivery.json`, `large-amount.json`,
//! `immediate-minimal.json`: the order objects alone), in this crate's `fixtures/` folder.

use std::path::PathBuf;

/// The path of fixture `name` (a file name such as `order-completed-delivery.json`).
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The text of fixture `name`.
#[allow(clippy::missing_panics_doc)]
pub fn read(name: &str) -> String {
    std::fs::read_to_string(path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

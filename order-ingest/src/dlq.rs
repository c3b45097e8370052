//! The dead-letter stream `<stream>:dlq`.
//!
//! Fields of a dead letter: `eventId`, `payload` (the original string, byte for byte), `error`
//! (a human-readable message), `errorClass` (one of [`ErrorClass::as_str`]), `streamId` (the
//! id of the original entry), `failedAt` (RFC 3339, UTC) and, when the entry was redelivered,
//! `deliveryCount`. Dead letters are written before the original entry is acknowledged, so a
//! crash in between may duplicate one (same `streamId`), never lose one.

use crate::event::ErrorClass;
use crate::stream::Entry;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub stream_id: String,
    pub event_id: String,
    pub payload: Vec<u8>,
    pub error: String,
    pub class: ErrorClass,
    pub deliveries: u64,
}

impl DeadLetter {
    pub fn new(entry: &Entry, event_id: Option<&str>, class: ErrorClass, error: String) -> Self {
        Self {
            stream_id: entry.id.clone(),
            event_id: entry
                .event_id
                .as_deref()
                .or(event_id)
                .unwrap_or_default()
                .to_owned(),
            payload: entry.payload.clone().unwrap_or_default(),
            error,
            class,
            deliveries: entry.deliveries,
        }
    }

    /// Appends this dead letter's `XADD` to `pipe`.
    pub fn add_to(&self, pipe: &mut redis::Pipeline, dlq_key: &str) {
        let failed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let cmd = pipe
            .cmd("XADD")
            .arg(dlq_key)
            .arg("*")
            .arg("eventId")
            .arg(&self.event_id)
            .arg("payload")
            .arg(&self.payload[..])
            .arg("error")
            .arg(&self.error)
            .arg("errorClass")
            .arg(self.class.as_str())
            .arg("streamId")
            .arg(&self.stream_id)
            .arg("failedAt")
            .arg(failed_at);
        if self.deliveries > 1 {
            cmd.arg("deliveryCount").arg(self.deliveries);
        }
    }
}

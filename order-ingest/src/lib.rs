//! `order-ingest`: checkout's OrderCompleted events from a Redis stream into orderdb, at least
//! once and idempotently. The binary is thin wiring around these modules, which the
//! integration tests drive directly.

pub mod backfill;
pub mod batch;
pub mod client;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod event;
pub mod group;
pub mod metrics;
pub mod outbox;
pub mod replay;
pub mod retry;
pub mod sample;
pub mod stream;
pub mod tls;

pub use config::{Cli, StreamArgs};
pub use consumer::{Abandoned, Consumer, Exit};
pub use metrics::Metrics;

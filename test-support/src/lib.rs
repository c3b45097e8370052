//! Helpers of the workspace's tests, in one dev-only crate: every crate names it only under
//! `[dev-dependencies]`, so no production build links it and no service input reaches it.
//!
//! - [`db`]: a fresh, migrated PostgreSQL database per test.
//! - [`otlp`]: an OTLP trace collector (gRPC and `http/protobuf`, optionally over TLS).
//! - [`tls`]: a test CA, private PostgreSQL and Redis servers with TLS, PgBouncer and a
//!   streaming replica, each on a spare port.
//! - [`fixtures`]: checkout's sample events and orders.
//! - [`http`]: an HTTP client for the servers' tests, with the service's error body checked.
//! - [`orders`]: the generator of distinct valid orders.
//! - [`spare_port`]: a free TCP port.
//!
//! Its `expect`s and `unwrap`s fire only when the test machine itself is unusable (a server
//! unreachable, a tool missing, a fixture absent); a panic with that message is how a test
//! reports it.

pub mod db;
pub mod fixtures;
pub mod http;
pub mod orders;
pub mod otlp;
pub mod tls;

/// A TCP port on 127.0.0.1 nobody listens on right now (bound, then released).
#[allow(clippy::missing_panics_doc)]
pub fn spare_port() -> u16 {
    // Binding port 0 on the loopback interface fails only on a machine without networking.
    #[allow(clippy::expect_used)]
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a spare port")
        .port()
}

//! The process runtime both binaries share, none of it storage: the shutdown signal and the log
//! format ([`process`]), logs and OpenTelemetry traces ([`telemetry`]), TLS for every
//! connection the service opens ([`tls`]: PostgreSQL, Redis, the JWKS client, https://
//! collectors) and the Prometheus series both binaries export alike ([`metrics`]).

pub mod health;
pub mod metrics;
pub mod process;
pub mod telemetry;
pub mod tls;

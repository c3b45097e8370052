//! Process glue both binaries share: log set-up and the shutdown signal.

/// Log line format of either binary (`--log-format` / `LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG`, or by `default_filter` when `RUST_LOG`
/// is unset or empty. A `RUST_LOG` that does not parse is a configuration error like any bad
/// flag, not a silent fallback: the `Err` is the one line to print before exiting non-zero.
pub fn init_logging(format: LogFormat, default_filter: &str) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| format!("invalid RUST_LOG {directives:?}: {e}"))?,
        _ => EnvFilter::try_new(default_filter)
            .map_err(|e| format!("invalid default log filter {default_filter:?}: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

/// Completes on the next SIGTERM (Kubernetes) or SIGINT (Ctrl-C). Call it again to wait for
/// a further signal.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

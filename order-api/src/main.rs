//! The `order-api` binary: configuration, logging, start-up checks and graceful shutdown.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use order_api::auth::Auth;
use order_api::config::{Config, LogFormat};
use order_api::{AppState, Limits};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    // warp's per-request "processing request" lines are left out by default: at load they
    // cost more than the request. RUST_LOG=debug brings back one line per request.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,warp::filters::trace=error"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
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
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}

async fn run(config: Config) -> anyhow::Result<()> {
    let auth = Auth::from_config(&config).await?;
    let pool = order_store::prepare_database(&config.db, "order-api")
        .await
        .context("cannot use the database")?;
    let state = AppState::new(
        pool,
        auth,
        Limits {
            max_body_bytes: config.max_body_bytes,
            pool_max: config.db.db_pool_size,
            db_op_timeout: config.db_query_timeout(),
        },
    );
    let (addr, server) =
        order_api::serve(&state, config.listen, shutdown_signal()).map_err(|e| {
            // warp repeats its cause at every level of the chain; the root says it all.
            let mut root: &dyn std::error::Error = &e;
            while let Some(next) = root.source() {
                root = next;
            }
            anyhow::anyhow!("cannot listen on {}: {root}", config.listen)
        })?;
    tracing::info!(%addr, "order-api listening");
    server.await;
    tracing::info!("order-api stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    init_tracing(config.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "order-api cannot start");
            eprintln!("order-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}

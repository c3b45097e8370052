//! The `order-api` binary: configuration, logging, start-up checks and graceful shutdown.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use order_api::auth::Auth;
use order_api::config::Config;
use order_api::{AppState, Limits, ReadReplicaConfig};
use order_store::runtime::{process, telemetry};

/// The default log filter. warp's per-request "processing request" lines are left out: at
/// load they cost more than the request. RUST_LOG=debug brings back one line per request.
const DEFAULT_LOG_FILTER: &str = "info,warp::filters::trace=error";

/// Exit status for a configuration that cannot be used (clap's convention for usage errors).
const USAGE_ERROR: u8 = 2;

/// In-flight requests get at most this long once the listener closes: with the default
/// shutdown delay, well inside Kubernetes' 30 s grace period.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);

/// Resolves when the listener should close: on SIGTERM (Kubernetes) or Ctrl-C, readiness
/// turns 503 at once, then requests are served on for `delay` while load balancers take this
/// instance out (a second signal cuts the delay short).
async fn stop_accepting(state: AppState, delay: Duration) {
    process::shutdown_signal().await;
    state.begin_draining();
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        "shutdown requested: readiness answers 503; serving on until load balancers stop routing here"
    );
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = process::shutdown_signal() => tracing::info!("second signal: closing now"),
    }
    tracing::info!("closing the listener; finishing in-flight requests");
}

async fn run(config: Config) -> anyhow::Result<()> {
    let auth = Auth::from_config(&config).await?;
    // Before the primary: a read URL that can never work is a configuration error, reported
    // as such. An unreachable replica is not: the monitor waits for it.
    let replica = config
        .read_db()
        .map(|args| ReadReplicaConfig::build(&args, config.read_max_lag()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("cannot use the read database: {e}"))?;
    let pool = order_store::prepare_database(&config.db, "order-api")
        .await
        .context("cannot use the database")?;
    let state = AppState::with_read_replica(pool, replica, auth, Limits::of(&config));
    let (closing_tx, closing) = tokio::sync::oneshot::channel::<()>();
    let stop = stop_accepting(state.clone(), config.shutdown_delay());
    let shutdown = async move {
        stop.await;
        let _ = closing_tx.send(());
    };
    let (addr, server) = order_api::serve(&state, config.listen, shutdown).map_err(|e| {
        // warp repeats its cause at every level of the chain; the root says it all.
        let mut root: &dyn std::error::Error = &e;
        while let Some(next) = root.source() {
            root = next;
        }
        anyhow::anyhow!("cannot listen on {}: {root}", config.listen)
    })?;
    tracing::info!(%addr, "order-api listening");
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => {}
        _ = closing => {
            if tokio::time::timeout(DRAIN_LIMIT, &mut server).await.is_err() {
                tracing::warn!(
                    limit_s = DRAIN_LIMIT.as_secs(),
                    "in-flight requests did not finish in time; exiting"
                );
            }
        }
    }
    tracing::info!("order-api stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let telemetry = match telemetry::init(config.log_format, DEFAULT_LOG_FILTER, "order-api") {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("order-api: {message}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let outcome = run(config).await;
    if let Err(e) = &outcome {
        tracing::error!(error = %format!("{e:#}"), "order-api cannot start");
    }
    // The log lines first, so that the error is the last line.
    telemetry.shutdown().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("order-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}

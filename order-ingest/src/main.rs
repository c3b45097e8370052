//! `order-ingest`: wiring of the command line, logging, signals and the three modes
//! (consume, `--replay`, `backfill`). Every start-up failure is one line on stderr and a
//! non-zero exit status, never a panic or a backtrace.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use order_ingest::client::{ModeError, RedisClient};
use order_ingest::config::{BackfillArgs, Cli, Command, StreamArgs};
use order_ingest::metrics::{self, Probe};
use order_ingest::retry::{self, REDIS_COMMAND};
use order_ingest::stream::RedisConn;
use order_ingest::{backfill, dlq, outbox, replay, sample, Abandoned, Consumer, Exit, Metrics};
use order_store::runtime::{process, telemetry};
use tokio::sync::watch;

/// Exit status for a command line that clap refused (its own convention).
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let message = one_line(&e.to_string());
            eprintln!(
                "order-ingest: {}",
                message.strip_prefix("error: ").unwrap_or(&message)
            );
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("order-ingest: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The trace exporters' clients live on the runtime.
    let telemetry = {
        let _runtime = runtime.enter();
        match telemetry::init(cli.log_format, "info", "order-ingest") {
            Ok(telemetry) => telemetry,
            Err(message) => {
                eprintln!("order-ingest: {message}");
                return ExitCode::from(USAGE_ERROR);
            }
        }
    };
    let outcome = runtime.block_on(run(cli));
    // The log lines first, so that the error is the last line.
    runtime.block_on(telemetry.shutdown());
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("order-ingest: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// clap's multi-line message (error, usage, hint) as one line: the error and what it names.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(mut cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Some(Command::Backfill(args)) => return run_backfill(args).await,
        Some(Command::PublishSample(args)) => {
            let client = check_redis(&mut cli.stream).await?;
            log_mode(&client);
            let started = std::time::Instant::now();
            let published = sample::publish(client, &cli.stream.stream_key, args).await?;
            println!(
                "published {published} sample events on {} in {:.1} s",
                cli.stream.stream_key,
                started.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Migrate) => {
            let mut db = cli.db.clone();
            db.migrate = true;
            order_store::prepare_database(&db, "order-ingest-migrate")
                .await
                .with_context(|| format!("cannot migrate {}", redact(&db.database_url)))?;
            println!("orderdb schema is current");
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Dlq(command)) => {
            log_mode(&check_redis(&mut cli.stream).await?);
            dlq::run(&cli.stream, &redact(&cli.stream.redis_url), command).await?;
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let pool = order_store::prepare_database(&cli.db, "order-ingest")
        .await
        .with_context(|| {
            format!(
                "cannot use the database at {}",
                redact(&cli.db.database_url)
            )
        })?;
    let redis = check_redis(&mut cli.stream).await?;
    if cli.replay {
        log_mode(&redis);
        let result = replay::replay(&pool, &cli.stream, &cli.from, cli.to.as_ref()).await;
        return Ok(match result {
            Ok(summary) => {
                println!("{summary}");
                if summary.failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                println!("{}", e.summary);
                eprintln!("order-ingest: {e}");
                ExitCode::FAILURE
            }
        });
    }
    consume(cli, pool, &redis).await
}

/// Start-up check: Redis must answer before the service says it started, and be what
/// `--redis-mode` says it is (one server or a cluster node). Fixes the mode in use in `stream`
/// (so `auto` is not asked again by every connection); [`log_mode`] says which, once start-up
/// is over (a start-up failure stays one line on stderr). On a cluster the
/// `PING` goes to every master, over TLS checked against the names the nodes announce.
async fn check_redis(stream: &mut StreamArgs) -> anyhow::Result<RedisClient> {
    let url = redact(&stream.redis_url);
    let client = stream.redis_client().context("invalid --redis-url")?;
    let mode = client.check(REDIS_COMMAND).await.map_err(|e| match e {
        ModeError::Unreachable(cause) => anyhow::anyhow!("cannot reach Redis at {url}: {cause}"),
        contradiction @ ModeError::Contradiction { .. } => {
            anyhow::anyhow!("{contradiction} (at {url})")
        }
    })?;
    stream.redis_mode = mode;
    let mut conn = RedisConn::new(client.clone(), REDIS_COMMAND);
    conn.query::<redis::Value>(&redis::cmd("PING"))
        .await
        .with_context(|| format!("cannot reach Redis at {url}"))?;
    Ok(client)
}

/// The one log line naming the Redis mode in use, and whether it was asked for or found out.
fn log_mode(client: &RedisClient) {
    let mode = client.mode().unwrap_or(client.requested());
    tracing::info!(
        mode = %mode.as_str(),
        requested = %client.requested().as_str(),
        "redis mode"
    );
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

async fn consume(
    cli: Cli,
    pool: order_store::Pool,
    redis: &RedisClient,
) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let probe = Arc::new(Probe {
        metrics: metrics.clone(),
        pool: pool.clone(),
        redis: tokio::sync::Mutex::new(
            RedisConn::new(
                cli.stream.redis_client().context("invalid --redis-url")?,
                Duration::from_secs(2),
            )
            .count_errors(metrics.redis_errors()),
        ),
        stream_key: cli.stream.stream_key.clone(),
        group: cli.stream.consumer_group.clone(),
    });
    let (server_stop_tx, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = metrics::bind(cli.metrics_addr, probe, async {
        let _ = server_stop_rx.await;
    })
    .map_err(|e| {
        // warp repeats its cause at every level of the chain; the root says it all.
        let mut root: &dyn std::error::Error = &e;
        while let Some(next) = root.source() {
            root = next;
        }
        anyhow::anyhow!("cannot serve metrics on {}: {root}", cli.metrics_addr)
    })?;
    let server = tokio::spawn(server);
    tracing::info!(%addr, "health and metrics server listening");
    log_mode(redis);

    tokio::spawn(async move {
        process::shutdown_signal().await;
        tracing::info!("shutdown requested: finishing the batch in flight");
        let _ = stop_tx.send(true);
        // A second signal means "now": the entries in flight stay pending and are redelivered.
        process::shutdown_signal().await;
        tracing::warn!("second signal: exiting without finishing");
        telemetry::flush_logs();
        std::process::exit(130);
    });

    let relay = outbox::spawn(
        &cli.outbox,
        &cli.stream.redis_url,
        pool.clone(),
        cli.stream.timeouts,
        metrics.clone(),
        stop_rx.clone(),
    )
    .context("invalid --redis-url")?;
    let consumer =
        Consumer::new(cli.stream, pool, metrics, stop_rx).context("invalid --redis-url")?;
    let exit = consumer.run().await;
    if let Some(relay) = relay {
        // The relay stops on the same signal; its batch in flight commits or rolls back.
        let _ = tokio::time::timeout(retry::DRAIN_LIMIT, relay).await;
    }
    let _ = server_stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(match exit {
        Exit::Clean => ExitCode::SUCCESS,
        Exit::Abandoned(Abandoned { entries }) => {
            tracing::warn!(
                entries,
                "stopped with a batch unfinished (dependency down); it stays pending for redelivery"
            );
            ExitCode::FAILURE
        }
    })
}

async fn run_backfill(args: &BackfillArgs) -> anyhow::Result<ExitCode> {
    let target = order_store::prepare_database(&args.db, "order-ingest-backfill")
        .await
        .with_context(|| {
            format!(
                "cannot use the target database at {}",
                redact(&args.db.database_url)
            )
        })?;
    let mut source_args = order_store::DbArgs::for_url(&args.source_database_url);
    source_args.db_pool_size = 2;
    source_args.db_connect_timeout_ms = args.db.db_connect_timeout_ms;
    source_args.db_prepared_statements = args
        .source_db_prepared_statements
        .unwrap_or(args.db.db_prepared_statements);
    let source = order_store::build_pool(&source_args, "order-ingest-backfill");
    drop(
        source
            .get()
            .await
            .map_err(order_store::StoreError::from)
            .with_context(|| {
                format!(
                    "cannot reach the source database at {}",
                    redact(&args.source_database_url)
                )
            })?,
    );
    let result = backfill::backfill(
        &source,
        &target,
        args.after,
        args.batch_size,
        args.timeouts,
        |p| println!("{p}"),
    )
    .await;
    match result {
        Ok(progress) => {
            println!("{progress} done");
            Ok(if progress.rejected == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(e) => {
            eprintln!("order-ingest: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

//! `order-ingest`: wiring of the command line, logging, signals and the three modes
//! (consume, `--replay`, `backfill`). Every start-up failure is one line on stderr and a
//! non-zero exit status, never a panic or a backtrace.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use order_ingest::config::{BackfillArgs, Cli, Command, DlqCommand, StreamArgs};
use order_ingest::metrics::{self, Probe};
use order_ingest::retry::{self, REDIS_COMMAND};
use order_ingest::stream::RedisConn;
use order_ingest::{backfill, dlq, outbox, replay, sample, Consumer, Exit, Metrics};
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
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("order-ingest: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    };
    runtime.block_on(telemetry.shutdown());
    code
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

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Some(Command::Backfill(args)) => return run_backfill(args).await,
        Some(Command::PublishSample(args)) => {
            let started = std::time::Instant::now();
            let published =
                sample::publish(&cli.stream.redis_url, &cli.stream.stream_key, args).await?;
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
        Some(Command::Dlq(command)) => return run_dlq(&cli.stream, command).await,
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
    check_redis(&cli.stream.redis_url).await?;
    if cli.replay {
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
    consume(cli, pool).await
}

/// Start-up check: Redis must answer before the service says it started.
async fn check_redis(url: &str) -> anyhow::Result<()> {
    let client = order_ingest::tls::redis_client(url).context("invalid --redis-url")?;
    let mut conn = RedisConn::new(client, REDIS_COMMAND);
    conn.query::<String>(&redis::cmd("PING"))
        .await
        .with_context(|| format!("cannot reach Redis at {}", redact(url)))?;
    Ok(())
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

async fn consume(cli: Cli, pool: order_store::Pool) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let probe = Arc::new(Probe {
        metrics: metrics.clone(),
        pool: pool.clone(),
        redis: tokio::sync::Mutex::new(
            RedisConn::new(
                order_ingest::tls::redis_client(cli.stream.redis_url.as_str())
                    .context("invalid --redis-url")?,
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

    tokio::spawn(async move {
        process::shutdown_signal().await;
        tracing::info!("shutdown requested: finishing the batch in flight");
        let _ = stop_tx.send(true);
        // A second signal means "now": the entries in flight stay pending and are redelivered.
        process::shutdown_signal().await;
        tracing::warn!("second signal: exiting without finishing");
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
        Exit::Abandoned { entries } => {
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

async fn run_dlq(stream: &StreamArgs, command: &DlqCommand) -> anyhow::Result<ExitCode> {
    let client = order_ingest::tls::redis_client(stream.redis_url.as_str())
        .context("invalid --redis-url")?;
    let mut conn = RedisConn::new(client, REDIS_COMMAND);
    let dlq_key = format!("{}:dlq", stream.stream_key);
    let unreachable = || format!("cannot read {dlq_key} at {}", redact(&stream.redis_url));
    match command {
        DlqCommand::List { count } => {
            let letters = dlq::read_dead_letters(&mut conn, &dlq_key, "-", *count as usize)
                .await
                .with_context(unreachable)?;
            let mut per_class = std::collections::BTreeMap::<String, u64>::new();
            for letter in &letters {
                println!("{letter}");
                *per_class
                    .entry(letter.field("errorClass").unwrap_or_default())
                    .or_default() += 1;
            }
            let classes: Vec<String> = per_class.iter().map(|(c, n)| format!("{c}={n}")).collect();
            println!(
                "{} dead letter(s) shown from {dlq_key}: {}",
                letters.len(),
                classes.join(" ")
            );
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Redrive { ids, all } => {
            let mut summary = dlq::RedriveSummary::default();
            let mut letters = Vec::new();
            if *all {
                // Page through a snapshot of what is there now; entries redriven and dead-lettered
                // again by a running consumer land after it and are not picked up twice.
                let mut start = "-".to_owned();
                loop {
                    let page = dlq::read_dead_letters(&mut conn, &dlq_key, &start, 500)
                        .await
                        .with_context(unreachable)?;
                    let Some(last) = page.last() else { break };
                    start = format!("({}", last.id);
                    for letter in page {
                        redrive(&mut conn, stream, &dlq_key, &letter, &mut summary).await?;
                    }
                }
            } else {
                for id in ids {
                    match dlq::read_dead_letters(&mut conn, &dlq_key, id, 1).await {
                        Ok(found) if found.first().is_some_and(|l| &l.id == id) => {
                            letters.extend(found);
                        }
                        Ok(_) => summary.missing.push(id.clone()),
                        // An id that is not a stream id at all: XRANGE refuses it.
                        Err(e) if e.to_string().contains("Invalid stream ID") => {
                            summary.missing.push(id.clone());
                        }
                        Err(e) => return Err(e).with_context(unreachable),
                    }
                }
                for letter in &letters {
                    redrive(&mut conn, stream, &dlq_key, letter, &mut summary).await?;
                }
            }
            println!(
                "redrove {} dead letter(s) from {dlq_key} to {}",
                summary.redriven, stream.stream_key
            );
            if summary.missing.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "order-ingest: not in {dlq_key}: {}",
                    summary.missing.join(", ")
                );
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

async fn redrive(
    conn: &mut RedisConn,
    stream: &StreamArgs,
    dlq_key: &str,
    letter: &dlq::StoredDeadLetter,
    summary: &mut dlq::RedriveSummary,
) -> anyhow::Result<()> {
    dlq::redrive_one(
        conn,
        &stream.stream_key,
        dlq_key,
        &stream.event_type,
        letter,
    )
    .await
    .with_context(|| format!("redriving {} failed; it is still in {dlq_key}", letter.id))?;
    println!("redriven {letter}");
    summary.redriven += 1;
    Ok(())
}

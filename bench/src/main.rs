//! `order-bench`: the parts of `bench/run.sh` that a shell cannot do precisely.
//!
//! - `seed`: N realistic orders with ids `md5(n)` (so pgbench computes the same ids in SQL) and
//!   the id file the wrk scripts draw from;
//! - `insert`: the database ceiling for the ingest's rows, in every form PostgreSQL offers to
//!   insert them idempotently (the ingest's own multi-row `INSERT ... VALUES ... ON CONFLICT DO
//!   NOTHING RETURNING id`, `INSERT ... SELECT FROM unnest(...)` with one array per column, and
//!   binary `COPY` into a temporary table then `INSERT ... SELECT ... ON CONFLICT DO NOTHING`;
//!   same rows, same batch size), and the existing service's pattern (one single-row INSERT
//!   per event in its own transaction);
//! - `wait-drain`: returns when a consumer group has read and acknowledged N entries;
//! - `latency`: publishes events at a fixed rate and measures publish-to-committed-row.
//!
//! Every loop is bounded by a count and a deadline. Results are one JSON object on stdout.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use md5::{Digest as _, Md5};
use order_ingest::sample::SampleOrder;
use order_store::schema::orders;
use serde_json::json;
use uuid::Uuid;

mod ceiling;
mod floor;

#[derive(Debug, Parser)]
#[command(name = "order-bench", about = "Helpers of bench/run.sh")]
struct Cli {
    /// PostgreSQL URL of the benchmark database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inserts `count` orders (ids md5(1..=count)) and writes their ids, one a line.
    Seed {
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Orders are spread over store numbers 1..=stores.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(i32).range(1..=2000))]
        stores: i32,
        #[arg(long)]
        ids_out: PathBuf,
    },
    /// Reads every row of `orders` into memory, truncates the table and inserts the same rows
    /// again, timed.
    Insert {
        #[arg(long, value_enum)]
        mode: InsertMode,
        /// Rows per statement (batch, unnest and copy modes).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=2000))]
        batch: u64,
        /// Concurrent connections.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
        conns: u64,
        /// Stop after this many rows.
        #[arg(long)]
        max_rows: Option<usize>,
        /// Stop starting new statements after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        max_seconds: f64,
    },
    /// Waits until `group` on `stream` has read at least `expect` entries and has none pending.
    WaitDrain {
        #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
        #[arg(long)]
        stream: String,
        #[arg(long, default_value = "order-service")]
        group: String,
        #[arg(long)]
        expect: u64,
        #[arg(long, default_value_t = 600.0)]
        timeout_seconds: f64,
    },
    /// Republishes entries of `source_stream` on `stream` at a fixed rate and measures the time
    /// from each XADD to its row becoming visible (committed) in `orders`.
    Latency {
        #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
        #[arg(long)]
        source_stream: String,
        #[arg(long)]
        stream: String,
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        rate: u64,
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: u64,
        /// How long to wait for the last rows after publishing ends.
        #[arg(long, default_value_t = 30.0)]
        drain_timeout_seconds: f64,
    },
    /// Serves `GET /orders/{id}` with the row as PostgreSQL's `row_to_json`, until killed: the
    /// floor order-api's GET is measured against (src/floor.rs).
    Floor {
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Database connections, shared by all requests (order-api's pool size by default).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
        connections: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InsertMode {
    /// Multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING id`, autocommit.
    Batch,
    /// `BEGIN; INSERT <one row> ON CONFLICT DO NOTHING; COMMIT` per row.
    Single,
    /// `INSERT INTO orders (...) SELECT * FROM unnest($1::uuid[], $2::int4[], ...) ON CONFLICT
    /// DO NOTHING RETURNING id`, one array parameter per column, autocommit.
    Unnest,
    /// `BEGIN; COPY tmp FROM STDIN (FORMAT binary); INSERT INTO orders SELECT ... FROM tmp ON
    /// CONFLICT DO NOTHING RETURNING id; COMMIT`, into a temporary table created once per
    /// connection with `ON COMMIT DELETE ROWS`.
    Copy,
}

impl InsertMode {
    fn name(self) -> &'static str {
        match self {
            InsertMode::Batch => "batch",
            InsertMode::Single => "single",
            InsertMode::Unnest => "unnest",
            InsertMode::Copy => "copy",
        }
    }
}

/// One connection of the insert benchmark, in the client its mode needs.
enum InsertConn {
    Diesel(Box<AsyncPgConnection>),
    Direct(ceiling::Ceiling),
}

/// One `orders` row with every column, read back and inserted as it is.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
struct Row {
    id: Uuid,
    store_number: i32,
    order_number: String,
    customer_id: Option<String>,
    fulfillment_type: String,
    fulfillment_date: Option<DateTime<Utc>>,
    reservation_id: Option<Uuid>,
    subtotal: BigDecimal,
    discount_total: BigDecimal,
    tax_total: BigDecimal,
    fulfillment_cost: BigDecimal,
    grand_total: BigDecimal,
    payment_status: String,
    payment_method: Option<String>,
    payment_reference: Option<String>,
    status: String,
    line_items: serde_json::Value,
    applied_discounts: serde_json::Value,
    customer_snapshot: Option<serde_json::Value>,
    fulfillment_details: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    created_by: Option<String>,
    session_id: Option<Uuid>,
}

#[derive(Debug, QueryableByName)]
struct SeenId {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let url = cli.database_url;
    let result = match cli.command {
        Command::Seed {
            count,
            stores,
            ids_out,
        } => seed(&url, count, stores, &ids_out).await?,
        Command::Insert {
            mode,
            batch,
            conns,
            max_rows,
            max_seconds,
        } => {
            let limits = Limits {
                max_rows,
                deadline: Duration::from_secs_f64(max_seconds.max(0.0)),
            };
            insert(&url, mode, batch as usize, conns as usize, limits).await?
        }
        Command::WaitDrain {
            redis_url,
            stream,
            group,
            expect,
            timeout_seconds,
        } => {
            wait_drain(
                &url,
                &redis_url,
                &stream,
                &group,
                expect,
                Duration::from_secs_f64(timeout_seconds.max(0.0)),
            )
            .await?
        }
        Command::Latency {
            redis_url,
            source_stream,
            stream,
            rate,
            seconds,
            drain_timeout_seconds,
        } => {
            let plan = LatencyPlan {
                rate,
                seconds,
                drain_timeout: Duration::from_secs_f64(drain_timeout_seconds.max(0.0)),
            };
            latency(&url, &redis_url, &source_stream, &stream, plan).await?
        }
        Command::Floor {
            listen,
            connections,
        } => return floor::serve(&url, listen, connections as usize).await,
    };
    println!("{result}");
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<AsyncPgConnection> {
    AsyncPgConnection::establish(url)
        .await
        .context("cannot connect to the benchmark database")
}

/// `md5(n::text)::uuid`, as pgbench computes it.
fn seeded_id(n: u64) -> Uuid {
    let digest = Md5::digest(n.to_string().as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest);
    Uuid::from_bytes(bytes)
}

/// Order `n` of the seed: `order-ingest publish-sample`'s order (1 to 4 line items, a discount
/// on a third of them, a customer snapshot, delivery details on DELIVERY orders) with the id
/// `md5(n)` and `createdAt` spread over the 30 days before `now`.
fn seed_order(n: u64, stores: i32, now: DateTime<Utc>) -> anyhow::Result<order_store::NewOrder> {
    let id = seeded_id(n);
    // The id's first bytes are as good as random, and the same on every run.
    let age = (id.as_u128() >> 64) as u64 % (30 * 86_400);
    let sample = SampleOrder {
        seed: n,
        id,
        stores,
        created_at: now - chrono::Duration::seconds(age as i64),
    };
    serde_json::from_str(&sample.to_json())
        .with_context(|| format!("seed order {n} is not a valid order"))
}

async fn seed(url: &str, count: u64, stores: i32, ids_out: &PathBuf) -> anyhow::Result<String> {
    const BATCH: u64 = 1000;
    let mut conn = connect(url).await?;
    let started = Instant::now();
    let now = Utc::now();
    let mut ids = String::with_capacity(count as usize * 37);
    let mut inserted = 0usize;
    let mut next = 1;
    while next <= count {
        let last = (next + BATCH - 1).min(count);
        let batch = (next..=last)
            .map(|n| seed_order(n, stores, now))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for order in &batch {
            let _ = writeln!(ids, "{}", order.id);
        }
        let outcomes = order_store::orders::insert_if_absent(&mut conn, &batch)
            .await
            .context("seed insert failed")?;
        inserted += outcomes
            .iter()
            .filter(|o| matches!(o, order_store::orders::InsertOutcome::Inserted))
            .count();
        next = last + 1;
    }
    conn.batch_execute("VACUUM ANALYZE orders")
        .await
        .context("VACUUM ANALYZE orders")?;
    std::fs::write(ids_out, ids).with_context(|| format!("cannot write {}", ids_out.display()))?;
    Ok(json!({
        "seeded": inserted,
        "stores": stores,
        "seconds": started.elapsed().as_secs_f64(),
    })
    .to_string())
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_rows: Option<usize>,
    deadline: Duration,
}

async fn insert(
    url: &str,
    mode: InsertMode,
    batch: usize,
    conns: usize,
    limits: Limits,
) -> anyhow::Result<String> {
    let mut conn = connect(url).await?;
    let mut rows: Vec<Row> = orders::table
        .select(Row::as_select())
        .load(&mut conn)
        .await
        .context("reading the rows back")?;
    if rows.is_empty() {
        bail!("orders is empty: nothing to insert");
    }
    if let Some(max) = limits.max_rows {
        rows.truncate(max);
    }
    conn.batch_execute("TRUNCATE orders; CHECKPOINT")
        .await
        .context("TRUNCATE orders")?;
    let per_statement = match mode {
        InsertMode::Batch | InsertMode::Unnest | InsertMode::Copy => batch,
        InsertMode::Single => 1,
    };
    let rows = Arc::new(rows);
    let next_chunk = Arc::new(AtomicUsize::new(0));
    let chunks = rows.len().div_ceil(per_statement);
    let mut connections = Vec::with_capacity(conns);
    for _ in 0..conns {
        connections.push(match mode {
            InsertMode::Batch | InsertMode::Single => {
                InsertConn::Diesel(Box::new(connect(url).await?))
            }
            InsertMode::Unnest => {
                InsertConn::Direct(ceiling::Ceiling::connect(url, ceiling::Form::Unnest).await?)
            }
            InsertMode::Copy => {
                InsertConn::Direct(ceiling::Ceiling::connect(url, ceiling::Form::Copy).await?)
            }
        });
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    for mut conn in connections {
        let rows = rows.clone();
        let next_chunk = next_chunk.clone();
        tasks.push(tokio::spawn(async move {
            let mut inserted = 0usize;
            let mut statements = 0usize;
            loop {
                let chunk = next_chunk.fetch_add(1, Ordering::Relaxed);
                if chunk >= chunks || started.elapsed() >= limits.deadline {
                    break;
                }
                let slice =
                    &rows[chunk * per_statement..((chunk + 1) * per_statement).min(rows.len())];
                inserted += match (&mut conn, mode) {
                    (InsertConn::Diesel(conn), InsertMode::Single) => {
                        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                            diesel::insert_into(orders::table)
                                .values(&slice[0])
                                .on_conflict_do_nothing()
                                .execute(conn)
                                .await
                        })
                        .await?
                    }
                    (InsertConn::Diesel(conn), _) => diesel::insert_into(orders::table)
                        .values(slice)
                        .on_conflict_do_nothing()
                        .returning(orders::id)
                        .get_results::<Uuid>(conn)
                        .await
                        .map(|ids| ids.len())?,
                    (InsertConn::Direct(c), _) => c.insert(slice).await?,
                };
                statements += 1;
            }
            Ok::<_, anyhow::Error>((inserted, statements))
        }));
    }
    let mut inserted = 0;
    let mut statements = 0;
    for task in tasks {
        let (i, s) = task.await.context("insert task panicked")??;
        inserted += i;
        statements += s;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "mode": mode.name(),
        "batch": per_statement,
        "conns": conns,
        "rows_available": rows.len(),
        "rows": inserted,
        "statements": statements,
        "seconds": seconds,
        "rows_per_s": inserted as f64 / seconds,
    })
    .to_string())
}

/// Field `name` of an XINFO GROUPS entry as an integer (nil and absent are `None`).
fn group_int(group: &HashMap<String, redis::Value>, name: &str) -> Option<u64> {
    match group.get(name) {
        Some(redis::Value::Int(v)) => u64::try_from(*v).ok(),
        _ => None,
    }
}

async fn wait_drain(
    url: &str,
    redis_url: &str,
    stream: &str,
    group: &str,
    expect: u64,
    timeout: Duration,
) -> anyhow::Result<String> {
    let client = redis::Client::open(redis_url).context("invalid Redis URL")?;
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .context("cannot connect to Redis")?;
    let started = Instant::now();
    let (mut read, mut pending) = (0, 0);
    let drained = loop {
        let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut redis)
            .await
            .context("XINFO GROUPS")?;
        if let Some(g) = groups.iter().find(
            |g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == group.as_bytes()),
        ) {
            read = group_int(g, "entries-read").unwrap_or(0);
            pending = group_int(g, "pending").unwrap_or(0);
        }
        if read >= expect && pending == 0 {
            break true;
        }
        if started.elapsed() >= timeout {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut conn = connect(url).await?;
    let rows: i64 = orders::table
        .count()
        .get_result(&mut conn)
        .await
        .context("counting rows")?;
    Ok(json!({
        "drained": drained,
        "entries_read": read,
        "pending": pending,
        "rows": rows,
        "wait_seconds": seconds,
    })
    .to_string())
}

#[derive(Debug, Clone, Copy)]
struct LatencyPlan {
    rate: u64,
    seconds: u64,
    drain_timeout: Duration,
}

/// One stream entry to republish: its fields and the order id in its payload.
struct Entry {
    fields: Vec<(String, String)>,
    order_id: Uuid,
}

async fn load_entries(
    redis: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    count: usize,
) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::with_capacity(count);
    let mut start = "-".to_owned();
    while entries.len() < count {
        let page: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await
            .context("XRANGE on the source stream")?;
        let Some((last_id, _)) = page.last() else {
            break;
        };
        start = format!("({last_id}");
        for (_, flat) in page {
            let fields: Vec<(String, String)> = flat
                .chunks_exact(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect();
            let Some((_, payload)) = fields.iter().find(|(k, _)| k == "payload") else {
                continue;
            };
            let event: serde_json::Value =
                serde_json::from_str(payload).context("source payload is not JSON")?;
            let Some(order_id) = event["data"]["order"]["id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
            else {
                continue;
            };
            entries.push(Entry { fields, order_id });
            if entries.len() == count {
                break;
            }
        }
    }
    Ok(entries)
}

const TRIGGER_UP: &str = "
    CREATE UNLOGGED TABLE IF NOT EXISTS bench_seen (id uuid NOT NULL);
    TRUNCATE bench_seen;
    CREATE OR REPLACE FUNCTION bench_seen_log() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO bench_seen (id) SELECT id FROM bench_new_rows; RETURN NULL; END $$;
    DROP TRIGGER IF EXISTS bench_seen_log ON orders;
    CREATE TRIGGER bench_seen_log AFTER INSERT ON orders REFERENCING NEW TABLE AS bench_new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION bench_seen_log();";

const TRIGGER_DOWN: &str = "
    DROP TRIGGER IF EXISTS bench_seen_log ON orders;
    DROP FUNCTION IF EXISTS bench_seen_log();
    DROP TABLE IF EXISTS bench_seen;";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn latency(
    url: &str,
    redis_url: &str,
    source_stream: &str,
    stream: &str,
    plan: LatencyPlan,
) -> anyhow::Result<String> {
    let client = redis::Client::open(redis_url).context("invalid Redis URL")?;
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .context("cannot connect to Redis")?;
    let wanted = (plan.rate * plan.seconds) as usize;
    let entries = load_entries(&mut redis, source_stream, wanted).await?;
    if entries.is_empty() {
        bail!("the source stream {source_stream} has no order events");
    }
    let total = entries.len();

    let mut setup = connect(url).await?;
    setup
        .batch_execute(TRIGGER_UP)
        .await
        .context("installing the commit-time trigger")?;

    // The poller: every visible bench_seen row is a committed order; its time is taken just
    // before the DELETE that saw it, so it is at most one poll interval late.
    let stop = Arc::new(AtomicBool::new(false));
    let seen_count = Arc::new(AtomicUsize::new(0));
    let mut poll_conn = connect(url).await?;
    let poller = {
        let stop = stop.clone();
        let seen_count = seen_count.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(Uuid, Instant)> = Vec::with_capacity(total);
            let mut polls = 0u64;
            while !AtomicBool::load(&stop, Ordering::Relaxed) {
                let at = Instant::now();
                let ids: Vec<SeenId> = diesel::sql_query("DELETE FROM bench_seen RETURNING id")
                    .load(&mut poll_conn)
                    .await?;
                polls += 1;
                seen.extend(ids.into_iter().map(|s| (s.id, at)));
                seen_count.store(seen.len(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok::<_, diesel::result::Error>((seen, polls))
        })
    };

    // The publisher: a 1 ms tick publishes every entry that is due by then, pipelined.
    let mut published: Vec<Option<Instant>> = vec![None; total];
    let started = Instant::now();
    let hard_stop = Duration::from_secs(plan.seconds * 3 + 10);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0;
    while sent < total && started.elapsed() < hard_stop {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * plan.rate as f64) as usize).min(total);
        if due <= sent {
            continue;
        }
        let mut pipe = redis::pipe();
        for entry in &entries[sent..due] {
            let cmd = pipe.cmd("XADD").arg(stream).arg("*");
            for (k, v) in &entry.fields {
                cmd.arg(k).arg(v);
            }
            cmd.ignore();
        }
        let at = Instant::now();
        pipe.query_async::<()>(&mut redis)
            .await
            .context("XADD failed")?;
        for slot in &mut published[sent..due] {
            *slot = Some(at);
        }
        sent = due;
    }
    let publish_seconds = started.elapsed().as_secs_f64();

    let waiting_since = Instant::now();
    while AtomicUsize::load(&seen_count, Ordering::Relaxed) < sent
        && waiting_since.elapsed() < plan.drain_timeout
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (seen, polls) = poller.await.context("poller panicked")??;
    setup
        .batch_execute(TRIGGER_DOWN)
        .await
        .context("removing the commit-time trigger")?;

    let published_at: HashMap<Uuid, Instant> = entries
        .iter()
        .zip(&published)
        .filter_map(|(e, at)| at.map(|at| (e.order_id, at)))
        .collect();
    let mut millis: Vec<f64> = seen
        .iter()
        .filter_map(|(id, at)| {
            published_at
                .get(id)
                .map(|p| at.saturating_duration_since(*p).as_secs_f64() * 1000.0)
        })
        .collect();
    millis.sort_by(f64::total_cmp);
    let mean = millis.iter().sum::<f64>() / millis.len().max(1) as f64;
    Ok(json!({
        "rate": plan.rate,
        "published": sent,
        "publish_seconds": publish_seconds,
        "achieved_rate": sent as f64 / publish_seconds,
        "committed": millis.len(),
        "missing": sent.saturating_sub(millis.len()),
        "polls": polls,
        "mean_ms": mean,
        "p50_ms": percentile(&millis, 50.0),
        "p90_ms": percentile(&millis, 90.0),
        "p99_ms": percentile(&millis, 99.0),
        "p999_ms": percentile(&millis, 99.9),
        "max_ms": millis.last().copied().unwrap_or(f64::NAN),
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_are_md5_of_the_number() {
        // SELECT md5('1')::uuid
        assert_eq!(
            seeded_id(1).to_string(),
            "c4ca4238-a0b9-2382-0dcc-509a6f75849b"
        );
    }

    #[test]
    fn seed_orders_are_valid() {
        let now = Utc::now();
        for n in 1..500 {
            seed_order(n, 200, now).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&v, 50.0) - 50.0).abs() < f64::EPSILON);
        assert!((percentile(&v, 99.0) - 99.0).abs() < f64::EPSILON);
        assert!((percentile(&v, 100.0) - 100.0).abs() < f64::EPSILON);
    }
}

#!/usr/bin/env bash
# bench/run.sh: the order service's benchmark runner. It writes docs/BENCHMARKS.md.
#
#   bench/run.sh [options]
#
# Runs on one machine against the local PostgreSQL (127.0.0.1:5432, user postgres) and Redis
# (127.0.0.1:6379), with release builds, traffic on loopback only:
#   1. API:     seeds N orders into a fresh database, then wrk (Lua scripts in bench/wrk/) at C
#               connections on GET /orders/{id}, GET /orders?storeNumber=..&size=20 and GraphQL
#               order(id) with the full field set; side by side pgbench (prepared, same C)
#               selecting one order by primary key (bench/pgbench_pk.sql) and running the
#               listing's page and count queries in its transaction (bench/pgbench_listing.sql),
#               and PostGraphile 4.14 serving the same table (one process and one per core);
#               and the floor of GET /orders/{id}: `order-bench floor` (bench/src/floor.rs),
#               hyper and tokio-postgres on 10 shared connections, PostgreSQL building the JSON
#               (row_to_json), under the same wrk script and connections. For each of these
#               runs the CPU per request: the server process's utime+stime (with its children;
#               for pgbench, pgbench itself) and all PostgreSQL processes' (with the postmaster's
#               reaped children) over the measured window, divided by its requests. No TLS
#               anywhere: wrk, order-api, the floor, PostGraphile and pgbench all in plain text.
#   2. ingest:  preloads N events (order-ingest publish-sample) into a fresh stream and times
#               order-ingest draining it with 1, 2 and 4 workers, and with 2 workers through a
#               private local Redis Cluster (deploy/local/redis-cluster.sh); side by side the database
#               ceiling: the same rows inserted directly (order-bench insert) in each of the
#               three idempotent forms (the ingest's multi-row INSERT ... VALUES, INSERT ...
#               SELECT FROM unnest(<one array per column>), binary COPY into a temporary table
#               then INSERT ... SELECT ... ON CONFLICT DO NOTHING), B rows a statement, at 1, 2
#               and 4 connections; and one single-row INSERT per event in its own transaction
#               (the existing service's pattern) at 1 and 2 connections.
#   3. latency: events published at a fixed rate; publish-to-committed-row percentiles.
#   4. outbox:  PATCH /orders/{id}/fulfillment through order-api (its change and its outbox row in
#               one transaction) with wrk; side by side pgbench running the same UPDATE without
#               the outbox (bench/pgbench_update.sql) and with it (bench/pgbench_update_outbox.sql).
#               Then N outbox rows (the seeded orders as FULFILLMENT_UPDATED events) and the time
#               order-ingest's relay takes to publish them all to a stream (events/s), against
#               redis-benchmark sending the same payload as pipelined XADDs (500 a pipeline, one
#               connection: the relay's batch size).
#   5. replica (only when selected with --phases): GET /orders/{id} and GraphQL order(id) on
#               order-api without and with a read replica (READ_DATABASE_URL): a private primary
#               and a pg_basebackup -R streaming replica on spare ports (bench/replica.sh).
#               Informational: both servers share this one machine.
# Peak RSS is VmHWM from /proc/<pid>/status, reset before and read after each phase. With
# profiling on (the default), perf samples the API under each workload and the ingest while
# draining; the summaries go into the report. Results and logs: target/bench-run/.
#
# Options (environment variable in brackets):
#   --events N            events preloaded and orders seeded            [BENCH_EVENTS=100000]
#   --duration S          seconds of each measured wrk/pgbench run      [BENCH_DURATION=20]
#   --warmup S            seconds of warm-up before each of them        [BENCH_WARMUP=5]
#   --connections C       wrk connections and pgbench clients           [BENCH_CONNECTIONS=64]
#   --rate R              events/s of the latency phase                 [BENCH_RATE=2000]
#   --latency-seconds S   seconds of the latency phase                  [BENCH_LATENCY_SECONDS=30]
#   --batch B             order-ingest --batch-size, and the ceilings'  [BENCH_BATCH=200]
#   --stores S            store numbers the orders spread over          [BENCH_STORES=200]
#   --existing-seconds S  time bound of the per-event pattern runs      [BENCH_EXISTING_SECONDS=15]
#   --phases LIST         comma-separated subset of api,ingest,latency,outbox [BENCH_PHASES=api,ingest,latency,outbox]
#                         and replica (not run unless listed)
#   --wait-idle S         wait up to S s after the build for the 1-min  [BENCH_WAIT_IDLE=120]
#                         load average to fall to nproc/2 (shared machine; 0: don't wait)
#   --no-profile          skip the perf profiles                        [BENCH_PROFILE=0]
#                         (every binary logs as deployed: RUST_LOG=info, LOG_FORMAT=json; the
#                         profiled ingest drain at BENCH_PROFILE_RUST_LOG, default RUST_LOG)
#   --no-install          never apt-get/npm install                     [BENCH_INSTALL=0]
#   --skip-build          use the release binaries already built        [BENCH_SKIP_BUILD=1]
#   --output FILE         report path                                   [BENCH_OUTPUT=docs/BENCHMARKS.md]
# Also: BENCH_DB (database, dropped and recreated: order_bench), PGHOST/PGPORT/PGUSER,
# REDIS_URL, BENCH_PORT_BASE (first of the loopback ports used: 18080), BENCH_BIN_DIR (the
# binaries: target/release; with --skip-build any directory holding them).
#
# Everything is bounded: every wait has a deadline, every load run a duration or a count. On
# exit (also on Ctrl-C) the runner stops the processes it started, drops its database and
# deletes its stream keys.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="$ROOT/bench"
OUT="$ROOT/target/bench-run"

EVENTS="${BENCH_EVENTS:-100000}"
DURATION="${BENCH_DURATION:-20}"
WARMUP="${BENCH_WARMUP:-5}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
RATE="${BENCH_RATE:-2000}"
LATENCY_SECONDS="${BENCH_LATENCY_SECONDS:-30}"
BATCH="${BENCH_BATCH:-200}"
STORES="${BENCH_STORES:-200}"
EXISTING_SECONDS="${BENCH_EXISTING_SECONDS:-15}"
PHASES="${BENCH_PHASES:-api,ingest,latency,outbox}"
PROFILE="${BENCH_PROFILE:-1}"
WAIT_IDLE="${BENCH_WAIT_IDLE:-120}"
INSTALL="${BENCH_INSTALL:-1}"
SKIP_BUILD="${BENCH_SKIP_BUILD:-0}"
OUTPUT="${BENCH_OUTPUT:-$ROOT/docs/BENCHMARKS.md}"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --events) EVENTS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --latency-seconds) LATENCY_SECONDS="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --stores) STORES="$2"; shift 2 ;;
    --existing-seconds) EXISTING_SECONDS="$2"; shift 2 ;;
    --phases) PHASES="$2"; shift 2 ;;
    --wait-idle) WAIT_IDLE="$2"; shift 2 ;;
    --no-profile) PROFILE=0; shift ;;
    --no-install) INSTALL=0; shift ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --output) OUTPUT="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$WAIT_IDLE" =~ ^[0-9]+$ ]] || { echo "bench/run.sh: --wait-idle must be a number of seconds" >&2; exit 2; }
for n in EVENTS DURATION WARMUP CONNECTIONS RATE LATENCY_SECONDS BATCH STORES EXISTING_SECONDS; do
  [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || { echo "bench/run.sh: $n must be a positive integer" >&2; exit 2; }
done
has_phase() { [[ ",$PHASES," == *",$1,"* ]]; }

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
DB="${BENCH_DB:-order_bench}"
export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" PGDATABASE="$DB"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
# The cluster drain points REDIS_URL at its private cluster for a while; cleanup uses this one.
SHARED_REDIS_URL="$REDIS_URL"
CLUSTER_DIR=""
PORT_BASE="${BENCH_PORT_BASE:-18080}"
API_ADDR="127.0.0.1:$((PORT_BASE + 8))"
PG_GRAPHILE_PORT=$((PORT_BASE + 5))
FLOOR_ADDR="127.0.0.1:$((PORT_BASE + 6))"
PREFIX="order-bench:$$"
THREADS="$(nproc)"
BIN="${BENCH_BIN_DIR:-$ROOT/target/release}"
# Every binary logs at the deployed level and in the deployed format (deploy/k8s/config.yaml):
# the measured drains pay for the per-order log line as production does, and the profile shows
# what it costs the worker.
export BENCH_DIR RUST_LOG="${RUST_LOG:-info}" LOG_FORMAT="${LOG_FORMAT:-json}"
PROFILE_RUST_LOG="${BENCH_PROFILE_RUST_LOG:-$RUST_LOG}"

log() { printf '%s bench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
# Records a command line for the report, then runs it.
run_logged() { printf '%s\n' "$*" >> "$OUT/commands.txt"; "$@"; }
json_line() { grep -o '{.*}' | tail -1; }

# ---------------------------------------------------------------- processes and cleanup
PIDS=()
KEYS=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  replica_cleanup
  if command -v redis-cli >/dev/null; then
    for key in "${KEYS[@]}"; do redis-cli -u "$SHARED_REDIS_URL" DEL "$key" "$key:dlq" >/dev/null 2>&1 || true; done
  fi
  if [ -n "$CLUSTER_DIR" ]; then bash "$ROOT/deploy/local/redis-cluster.sh" stop "$CLUSTER_DIR" >/dev/null 2>&1 || true; fi
  psql -d postgres -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  [ "$status" -eq 0 ] || log "exit status $status; logs in $OUT"
  exit "$status"
}
# shellcheck source=bench/replica.sh
. "$BENCH_DIR/replica.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

# SIGTERM, up to 10 s to exit, then SIGKILL; only our own children by pid.
stop_pid() {
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
forget_pid() { local p keep=(); for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; PIDS=("${keep[@]}"); }

# Peak RSS: VmHWM (kB) of a process and its children (PostGraphile's cluster workers).
family() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }
reset_hwm() { local p; for p in $(family "$1"); do echo 5 > "/proc/$p/clear_refs" 2>/dev/null || true; done; }
hwm_kb() {
  local p total=0 v
  for p in $(family "$1"); do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

wait_http() { # url, seconds, [curl args...]
  local url="$1" secs="$2" i; shift 2
  for i in $(seq 1 $((secs * 10))); do
    curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# -------------------------------------------------------------------------- install, build
install_tools() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v pgbench >/dev/null || missing+=(postgresql-client)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  if [ "$PROFILE" = 1 ] && ! command -v perf >/dev/null; then missing+=(linux-perf); fi
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || die "missing ${missing[*]} and --no-install given"
    log "installing ${missing[*]} (apt-get)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if has_phase api && ! [ -x "$BENCH_DIR/node_modules/.bin/postgraphile" ]; then
    [ "$INSTALL" = 1 ] || die "PostGraphile missing (bench/node_modules) and --no-install given"
    command -v npm >/dev/null || die "npm is needed for PostGraphile"
    log "installing PostGraphile 4.14 (npm, into bench/node_modules)"
    (cd "$BENCH_DIR" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

build() {
  if [ "$SKIP_BUILD" = 1 ]; then log "skipping the build"; else
    local packages=(-p order-bench -p order-api)
    { has_phase ingest || has_phase latency || has_phase outbox || has_phase replica; } && packages+=(-p order-ingest)
    log "cargo build --release ${packages[*]}"
    (cd "$ROOT" && cargo build --release --quiet "${packages[@]}")
  fi
}

facts() {
  local f="$OUT/facts.env"
  {
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc=$(nproc)"
    echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    echo "memory=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "rustc=$(rustc -V 2>/dev/null)"
    echo "postgres=$(psql -d postgres -qAtc 'SHOW server_version')"
    echo "pg_settings=$(psql -d postgres -qAtc "SELECT string_agg(name || '=' || setting || COALESCE(unit, ''), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers','synchronous_commit','fsync','max_connections','wal_level')")"
    echo "redis=$(redis-cli -u "$REDIS_URL" INFO server | sed -n 's/^redis_version:\(.*\)\r$/\1/p')"
    echo "node=$(node -v 2>/dev/null || echo none)"
    echo "postgraphile=$(sed -n 's/^ *"version": *"\(.*\)".*/\1/p' "$BENCH_DIR/node_modules/postgraphile/package.json" 2>/dev/null | head -1)"
    echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
    echo "pgbench=$(pgbench -V | awk '{print $3}')"
    echo "perf=$(perf --version 2>/dev/null || echo none)"
    local b; for b in order-api order-ingest; do
      # The allocator: glibc malloc unless the binary sets a #[global_allocator].
      echo "allocator_${b#order-}=$(grep -rhA1 '#\[global_allocator\]' "$ROOT/$b/src" 2>/dev/null | sed -n 's/.*static [A-Za-z_]*: *\([^ =]*\).*/\1/p' | head -1 | grep . || echo 'glibc malloc (system allocator)')"
    done
    echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "events=$EVENTS"; echo "duration=$DURATION"; echo "warmup=$WARMUP"
    echo "connections=$CONNECTIONS"; echo "rate=$RATE"; echo "latency_seconds=$LATENCY_SECONDS"
    echo "batch=$BATCH"; echo "stores=$STORES"; echo "existing_seconds=$EXISTING_SECONDS"
    echo "threads=$THREADS"; echo "phases=$PHASES"; echo "profile=$PROFILE"
    echo "rust_log=$RUST_LOG"; echo "log_format=$LOG_FORMAT"; echo "profile_rust_log=$PROFILE_RUST_LOG"
  } > "$f"
}

# The schema: `order-ingest migrate` (the embedded migrations both binaries share).
migrate() {
  "$BIN/order-ingest" migrate > "$OUT/migrate.log" 2>&1 || die "migrations failed (see $OUT/migrate.log)"
}

# The machine may be shared: wait (bounded) for the 1-min load average to fall to nproc/2.
wait_idle() {
  [ "$WAIT_IDLE" -gt 0 ] || return 0
  local limit waited=0
  limit=$(awk -v n="$THREADS" 'BEGIN {print n / 2}')
  while awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v m="$limit" 'BEGIN {exit !(l > m)}'; do
    if [ "$waited" -ge "$WAIT_IDLE" ]; then
      log "the machine is still busy (load $(cut -d' ' -f1 /proc/loadavg)) after ${WAIT_IDLE}s: measuring anyway"
      return 0
    fi
    [ "$waited" -gt 0 ] || log "waiting up to ${WAIT_IDLE}s for a quiet machine (1-min load <= $limit)"
    sleep 5; waited=$((waited + 5))
  done
}

fresh_database() {
  psql -d postgres -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  psql -d postgres -qAtc "CREATE DATABASE $DB" >/dev/null
}

# ------------------------------------------------------------------------------ profiling
# profile NAME PID SECONDS: a system-wide sample (which process uses the CPU) and a DWARF
# call-graph sample of PID (what inside it), both in the background; `profile_wait` ends them.
PERF_PIDS=()
profile_start() {
  local name="$1" pid="$2" secs="$3"
  [ "$PROFILE" = 1 ] || return 0
  perf record -q -a -F 499 -o "$OUT/perf-$name-all.data" -- sleep "$secs" >/dev/null 2>&1 &
  PERF_PIDS+=($!); PIDS+=($!)
  perf record -q -F 99 --call-graph dwarf,16384 -p "$pid" -o "$OUT/perf-$name-dwarf.data" -- sleep "$secs" >/dev/null 2>&1 &
  PERF_PIDS+=($!); PIDS+=($!)
}
profile_wait() {
  local p
  for p in "${PERF_PIDS[@]}"; do wait "$p" 2>/dev/null || true; forget_pid "$p"; done
  PERF_PIDS=()
}
profile_stop() { # ends recordings early (SIGINT makes perf write its file)
  local p
  for p in "${PERF_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  profile_wait
}
profile_summarize() { # name pid
  local name="$1" pid="$2"
  local all="$OUT/perf-$name-all.data" dwarf="$OUT/perf-$name-dwarf.data"
  [ "$PROFILE" = 1 ] && [ -s "$all" ] || return 0
  perf report -i "$all" --no-children --sort comm --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -8 > "$OUT/profile-$name-comm.txt" || true
  perf report -i "$all" --no-children --pid "$pid" --percentage relative --sort dso,symbol --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' > "$OUT/profile-$name-self.txt" || true
  [ -s "$dwarf" ] && perf report -i "$dwarf" --children --sort symbol --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' > "$OUT/profile-$name-children.txt" || true
  rm -f "$all" "$dwarf"
}

# ------------------------------------------------------------------------- CPU per request
# CPU time in clock ticks (utime + stime) over a measured window, divided by its requests: for
# the server (a process and its children, such as PostGraphile's cluster workers; or `self`: this
# shell's reaped children, for pgbench, which has exited when the window closes) and for
# PostgreSQL (every `postgres` process, plus the postmaster's cutime + cstime so that backends
# which exit inside the window still count). PostgreSQL is the machine's whole server: work of
# other databases on it in the window counts too. The name field of /proc/<pid>/stat is cut off
# first, so field N is $(N-2). `self` is the main shell ($$), which waits for pgbench.
TCK="$(getconf CLK_TCK)"
stat_ticks() { # pids on stdin -> the sum of their utime + stime
  local p
  while read -r p; do cat "/proc/$p/stat" 2>/dev/null || true; done \
    | awk '{sub(/^.*\) /, ""); t += $12 + $13} END {print t + 0}'
}
pg_ticks() { # the postmaster: the postgres process whose parent is not one
  local p
  for p in $(pgrep -x postgres || true); do cat "/proc/$p/stat" 2>/dev/null || true; done \
    | awk '{pid = $1; sub(/^.*\) /, ""); ppid[pid] = $2; t += $12 + $13; c[pid] = $14 + $15}
      END {for (p in ppid) if (!(ppid[p] in ppid)) t += c[p]; print t + 0}'
}
server_ticks() { # pid | self
  if [ "$1" = self ]; then sed 's/^.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'
  else family "$1" | stat_ticks; fi
}
cpu_start() { CPU_SERVER0=$(server_ticks "$1"); CPU_PG0=$(pg_ticks); }
cpu_stop() { CPU_SERVER1=$(server_ticks "$1"); CPU_PG1=$(pg_ticks); }
cpu_json() { # requests -> ',"cpu_server_us_per_req":..,...' for the run's JSON
  awk -v s0="$CPU_SERVER0" -v s1="$CPU_SERVER1" -v p0="$CPU_PG0" -v p1="$CPU_PG1" -v n="$1" -v t="$TCK" 'BEGIN {
    if (n <= 0) n = 1
    printf ",\"cpu_server_s\":%.2f,\"cpu_pg_s\":%.2f,\"cpu_server_us_per_req\":%.1f,\"cpu_pg_us_per_req\":%.1f",
      (s1 - s0) / t, (p1 - p0) / t, (s1 - s0) / t * 1e6 / n, (p1 - p0) / t * 1e6 / n }'
}

# ------------------------------------------------------------------------------ API phase
wrk_run() { # name url script pid [VAR=value...]: warm-up, then the measured run -> $OUT/name.json
  local name="$1" url="$2" script="$3" pid="$4"; shift 4
  env "$@" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 10s -s "$script" "$url" > "$OUT/$name.warmup.txt"
  reset_hwm "$pid"
  printf '%s wrk -t%s -c%s -d%ss --timeout 10s -s %s %s\n' "$*" "$THREADS" "$CONNECTIONS" "$DURATION" \
    "${script#"$ROOT/"}" "$url" | sed 's/^ //' >> "$OUT/commands.txt"
  cpu_start "$pid"
  env "$@" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s -s "$script" "$url" > "$OUT/$name.txt"
  cpu_stop "$pid"
  local hwm cpu requests; hwm=$(hwm_kb "$pid")
  requests=$(grep '^WRK_JSON' "$OUT/$name.txt" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p')
  cpu=$(cpu_json "${requests:-0}")
  grep '^WRK_JSON' "$OUT/$name.txt" | json_line | sed "s/}\$/,\"hwm_kb\":$hwm$cpu}/" > "$OUT/$name.json"
  [ -s "$OUT/$name.json" ] || die "wrk gave no result for $name (see $OUT/$name.txt)"
  log "$name: $(cat "$OUT/$name.json")"
}

pgbench_run() { # name script VAR=value: warm-up, then the measured run -> $OUT/name.json
  local name="$1" script="$2" define="$3"
  local pgb=(pgbench -n -M prepared -c "$CONNECTIONS" -j "$THREADS" -D "$define" -f "$BENCH_DIR/$script")
  "${pgb[@]}" -T "$WARMUP" "$DB" > "$OUT/$name.warmup.txt" 2>&1
  mkdir -p "$OUT/$name-log"; rm -f "$OUT/$name-log/"*
  echo "pgbench -n -M prepared -c $CONNECTIONS -j $THREADS -D $define -f bench/$script -T $DURATION -l $DB" >> "$OUT/commands.txt"
  cpu_start self
  (cd "$OUT/$name-log" && "${pgb[@]}" -T "$DURATION" -l "$DB") > "$OUT/$name.txt" 2>&1
  cpu_stop self
  local tps; tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$OUT/$name.txt")
  [ -n "$tps" ] || die "pgbench gave no result for $name (see $OUT/$name.txt)"
  # Per-transaction log: field 3 is the latency in microseconds.
  cat "$OUT/$name-log/"* | awk '{print $3}' | sort -n > "$OUT/$name-latencies.txt"
  local n p50 p99 p999 cpu
  n=$(wc -l < "$OUT/$name-latencies.txt")
  cpu=$(cpu_json "$n")
  p50=$(sed -n "$(( (n * 50 + 99) / 100 ))p" "$OUT/$name-latencies.txt")
  p99=$(sed -n "$(( (n * 99 + 99) / 100 ))p" "$OUT/$name-latencies.txt")
  p999=$(sed -n "$(( (n * 999 + 999) / 1000 ))p" "$OUT/$name-latencies.txt")
  printf '{"rps":%s,"requests":%s,"lat_p50_us":%s,"lat_p99_us":%s,"lat_p999_us":%s%s}\n' "$tps" "$n" "$p50" "$p99" "$p999" "$cpu" > "$OUT/$name.json"
  rm -rf "$OUT/$name-log" "$OUT/$name-latencies.txt"
  log "$name: $(cat "$OUT/$name.json")"
}

api_phase() {
  log "API phase: fresh database $DB, order-api on $API_ADDR"
  echo "# API" >> "$OUT/commands.txt"
  fresh_database
  "$BIN/order-api" --listen "$API_ADDR" --auth-disabled --migrate > "$OUT/order-api.log" 2>&1 &
  local api=$!; PIDS+=("$api")
  echo "order-api --listen $API_ADDR --auth-disabled --migrate   # DATABASE_URL=$DATABASE_URL, RUST_LOG=$RUST_LOG, pool: default (10)" >> "$OUT/commands.txt"
  wait_http "http://$API_ADDR/health/ready" 30 || die "order-api did not become ready (see $OUT/order-api.log)"

  log "seeding $EVENTS orders over $STORES stores"
  run_logged "$BIN/order-bench" seed --count "$EVENTS" --stores "$STORES" --ids-out "$OUT/ids.txt" | json_line > "$OUT/seed.json"
  export IDS_FILE="$OUT/ids.txt" STORES
  local id; id=$(head -1 "$OUT/ids.txt")

  # Sanity: every workload answers with the order before anything is measured.
  curl -fsS "http://$API_ADDR/orders/$id" | grep -q "\"$id\"" || die "GET /orders/$id did not return the order"
  curl -fsS "http://$API_ADDR/orders?storeNumber=1&size=20" | grep -q '"totalCount"' || die "the store listing failed"
  curl -fsS -H 'Content-Type: application/json' "http://$API_ADDR/graphql" \
    -d "{\"query\":\"query(\$id: ID!){order(id:\$id){id lineItems{sku} fulfillmentDetails{type}}}\",\"variables\":{\"id\":\"$id\"}}" \
    | grep -q "\"id\":\"$id\"" || die "GraphQL order(id) did not return the order"

  wrk_run api_order_by_id "http://$API_ADDR" "$BENCH_DIR/wrk/order_by_id.lua" "$api"
  wrk_run api_orders_by_store "http://$API_ADDR" "$BENCH_DIR/wrk/orders_by_store.lua" "$api"
  wrk_run api_graphql_order "http://$API_ADDR" "$BENCH_DIR/wrk/graphql_order.lua" "$api" GQL_FLAVOR=service

  if [ "$PROFILE" = 1 ]; then
    local name script secs=6
    for name in order_by_id orders_by_store graphql_order; do
      script="$BENCH_DIR/wrk/$name.lua"
      log "profiling order-api under $name (${secs}s)"
      GQL_FLAVOR=service timeout $((secs + 10)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$((secs + 2))s" -s "$script" "http://$API_ADDR" > /dev/null &
      local w=$!; PIDS+=("$w")
      sleep 1
      profile_start "api_$name" "$api" "$secs"
      profile_wait
      wait "$w" 2>/dev/null || true; forget_pid "$w"
      profile_summarize "api_$name" "$api"
    done
  fi
  stop_pid "$api"; forget_pid "$api"
  floor_run "$id"

  log "pgbench: one order by primary key, prepared, $CONNECTIONS clients"
  pgbench_run pgbench pgbench_pk.sql "orders=$EVENTS"
  log "pgbench: the store listing's page and count queries, prepared, $CONNECTIONS clients"
  pgbench_run pgbench_listing pgbench_listing.sql "stores=$STORES"

  # PostGraphile twice: one Node process (its default) and one cluster worker per core; the
  # faster of the two is the peer.
  local workers
  for workers in 1 "$THREADS"; do
    postgraphile_run "$workers" "$id"
  done
}

# The floor of GET /orders/{id}: `order-bench floor` (bench/src/floor.rs), hyper and
# tokio-postgres with PostgreSQL writing the JSON, on as many connections as order-api's pool.
floor_run() { # id
  local id="$1"
  log "the floor: order-bench floor on $FLOOR_ADDR, 10 connections"
  echo "order-bench floor --listen $FLOOR_ADDR --connections 10   # DATABASE_URL=$DATABASE_URL" >> "$OUT/commands.txt"
  "$BIN/order-bench" floor --listen "$FLOOR_ADDR" --connections 10 > "$OUT/floor.log" 2>&1 &
  local floor=$!; PIDS+=("$floor")
  wait_http "http://$FLOOR_ADDR/orders/$id" 30 || die "the floor server did not start (see $OUT/floor.log)"
  curl -fsS "http://$FLOOR_ADDR/orders/$id" | grep -q "\"$id\"" || die "the floor's GET /orders/$id did not return the order"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$FLOOR_ADDR/orders/not-a-uuid")" = 400 ] \
    || die "the floor did not answer 400 to a malformed id"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$FLOOR_ADDR/orders/00000000-0000-0000-0000-000000000000")" = 404 ] \
    || die "the floor did not answer 404 to an unknown id"
  wrk_run floor_order_by_id "http://$FLOOR_ADDR" "$BENCH_DIR/wrk/order_by_id.lua" "$floor"
  stop_pid "$floor"; forget_pid "$floor"
}

postgraphile_run() { # cluster-workers id
  local workers="$1" id="$2" name="postgraphile_order_$1"
  local cluster=(); [ "$workers" -gt 1 ] && cluster=(--cluster-workers "$workers")
  log "PostGraphile $(sed -n 's/^postgraphile=//p' "$OUT/facts.env"), $workers process(es), on 127.0.0.1:$PG_GRAPHILE_PORT"
  local pg_cmd=("$BENCH_DIR/node_modules/.bin/postgraphile" -c "$DATABASE_URL" --host 127.0.0.1 --port "$PG_GRAPHILE_PORT"
    "${cluster[@]}" --dynamic-json --disable-query-log --disable-graphiql -m 10)
  echo "NODE_ENV=production postgraphile -c $DATABASE_URL --host 127.0.0.1 --port $PG_GRAPHILE_PORT ${cluster[*]}${cluster[*]:+ }--dynamic-json --disable-query-log --disable-graphiql -m 10" >> "$OUT/commands.txt"
  NODE_ENV=production "${pg_cmd[@]}" > "$OUT/$name.log" 2>&1 &
  local pgl=$!; PIDS+=("$pgl")
  local body="{\"query\":\"query(\$id: UUID!){orderById(id:\$id){id lineItems}}\",\"variables\":{\"id\":\"$id\"}}"
  wait_http "http://127.0.0.1:$PG_GRAPHILE_PORT/graphql" 60 -H 'Content-Type: application/json' -d "$body" \
    || die "PostGraphile did not start (see $OUT/$name.log)"
  curl -fsS -H 'Content-Type: application/json' "http://127.0.0.1:$PG_GRAPHILE_PORT/graphql" -d "$body" \
    | grep -q "\"id\":\"$id\"" || die "PostGraphile orderById did not return the order"
  wrk_run "$name" "http://127.0.0.1:$PG_GRAPHILE_PORT" "$BENCH_DIR/wrk/graphql_order.lua" "$pgl" GQL_FLAVOR=postgraphile
  stop_pid "$pgl"; forget_pid "$pgl"
}

# --------------------------------------------------------------------------- ingest phase
ingest_start() { # key worker-number; sets LAST_PID
  local key="$1" i="$2"
  "$BIN/order-ingest" --stream-key "$key" --consumer-group order-service --consumer-name "bench-$i" \
    --batch-size "$BATCH" --metrics-addr "127.0.0.1:$((PORT_BASE + 10 + i))" >> "$OUT/order-ingest-$i.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

preload() { # key count; sets PUBLISH_RATE (events/s)
  local key="$1" count="$2"
  KEYS+=("$key")
  # The group must exist before the events: order-ingest creates it at `$` (new entries only).
  echo "redis-cli XGROUP CREATE $key order-service 0 MKSTREAM" >> "$OUT/commands.txt"
  redis-cli -u "$REDIS_URL" XGROUP CREATE "$key" order-service 0 MKSTREAM > /dev/null
  local t0 t1; t0=$(now)
  echo "ORDER_STREAM_KEY=$key order-ingest publish-sample --count $count --rate 0 --stores $STORES" >> "$OUT/commands.txt"
  ORDER_STREAM_KEY="$key" "$BIN/order-ingest" publish-sample --count "$count" --rate 0 --stores "$STORES" > "$OUT/publish-$key.txt" 2>&1 \
    || die "publish-sample failed (see $OUT/publish-$key.txt)"
  t1=$(now)
  local len; len=$(redis-cli -u "$REDIS_URL" XLEN "$key")
  [ "$len" -ge "$count" ] || die "stream $key has $len entries, expected $count"
  PUBLISH_RATE=$(awk -v n="$count" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
}

drain() { # workers key name [profile]
  local workers="$1" key="$2" name="$3" prof="${4:-0}" expect
  expect=$(redis-cli -u "$REDIS_URL" XLEN "$key")
  psql -qAtc "TRUNCATE orders" >/dev/null
  psql -qAtc "CHECKPOINT" >/dev/null
  local pids=() i t0 t1
  t0=$(now)
  for i in $(seq 1 "$workers"); do ingest_start "$key" "$i"; pids+=("$LAST_PID"); done
  if [ "$prof" = 1 ]; then profile_start "$name" "${pids[0]}" 120; fi
  "$BIN/order-bench" wait-drain --stream "$key" --expect "$expect" --timeout-seconds 600 | json_line > "$OUT/$name.wait.json"
  t1=$(now)
  if [ "$prof" = 1 ]; then profile_stop; fi
  local hwm_list=() inserted=0 dead=0 m cpu=0 batch_sum=0 batches=0 tck
  tck=$(getconf CLK_TCK)
  for i in $(seq 1 "$workers"); do
    hwm_list+=("$(hwm_kb "${pids[$((i - 1))]}")")
    # utime + stime of the worker (fields 14 and 15 of /proc/<pid>/stat; the name field has no spaces here)
    cpu=$(awk -v c="$cpu" -v t="$tck" '{printf "%.3f", c + ($14 + $15) / t}' "/proc/${pids[$((i - 1))]}/stat")
    m=$(curl -fsS --max-time 5 "http://127.0.0.1:$((PORT_BASE + 10 + i))/metrics" || true)
    inserted=$((inserted + $(echo "$m" | awk '/^order_ingest_events_inserted_total/ {s+=$2} END {print s+0}')))
    dead=$((dead + $(echo "$m" | awk '/^order_ingest_events_dead_lettered_total/ {s+=$2} END {print s+0}')))
    batch_sum=$(echo "$m" | awk -v s="$batch_sum" '/^order_ingest_batch_duration_seconds_sum/ {s+=$2} END {printf "%.3f", s}')
    batches=$(echo "$m" | awk -v s="$batches" '/^order_ingest_batch_duration_seconds_count/ {s+=$2} END {print s}')
  done
  if [ "$prof" = 1 ]; then profile_summarize "$name" "${pids[0]}"; fi
  for i in "${pids[@]}"; do stop_pid "$i"; forget_pid "$i"; done
  local max_hwm; max_hwm=$(printf '%s\n' "${hwm_list[@]}" | sort -n | tail -1)
  python3 - "$OUT/$name.wait.json" "$workers" "$expect" "$t0" "$t1" "$inserted" "$dead" "$max_hwm" "$cpu" "$batch_sum" "$batches" > "$OUT/$name.json" <<'EOF'
import json, sys
wait = json.load(open(sys.argv[1]))
workers, expect, t0, t1, inserted, dead, hwm, cpu, batch_sum, batches = sys.argv[2:]
seconds = float(t1) - float(t0)
wait.update(workers=int(workers), events=int(expect), seconds=seconds,
            rows_per_s=wait["rows"] / seconds, inserted_metric=int(inserted),
            dead_lettered=int(dead), hwm_kb=int(hwm), cpu_seconds=float(cpu),
            batch_seconds_sum=float(batch_sum), batches=int(float(batches or 0)))
print(json.dumps(wait))
EOF
  log "$name: $(cat "$OUT/$name.json")"
  grep -q '"drained": true' "$OUT/$name.json" || die "$name did not drain within the time limit"
}

# The ceiling forms of `order-bench insert` and the connection counts they run at.
CEILING_FORMS=(batch unnest copy)
CEILING_CONNS=(1 2 4)
INGEST_WORKERS=(1 2 4)

ingest_phase() {
  log "ingest phase: fresh database $DB"
  echo "# ingest" >> "$OUT/commands.txt"
  fresh_database
  migrate
  local w key form c
  for w in "${INGEST_WORKERS[@]}"; do
    key="$PREFIX:drain$w"
    log "preloading $EVENTS events into $key"
    preload "$key" "$EVENTS"
    echo "{\"events\":$EVENTS,\"events_per_s\":$PUBLISH_RATE}" > "$OUT/publish_w$w.json"
    echo "order-ingest --stream-key $key --consumer-group order-service --consumer-name bench-N --batch-size $BATCH --metrics-addr 127.0.0.1:PORT   # x$w, DATABASE_URL=$DATABASE_URL" >> "$OUT/commands.txt"
    log "draining with $w worker(s)"
    drain "$w" "$key" "ingest_w$w"
    if [ "$w" = 1 ]; then
      # Every ceiling reads back the rows this drain committed, truncates the table and
      # inserts them again, so the table is whole again after each.
      for form in "${CEILING_FORMS[@]}"; do
        for c in "${CEILING_CONNS[@]}"; do
          log "database ceiling: same rows, $form, $BATCH rows a statement, $c connection(s)"
          run_logged "$BIN/order-bench" insert --mode "$form" --batch "$BATCH" --conns "$c" --max-seconds 600 \
            | json_line > "$OUT/ceiling_${form}_c$c.json"
          log "ceiling_${form}_c$c: $(cat "$OUT/ceiling_${form}_c$c.json")"
        done
      done
    fi
    if [ "$w" -le 2 ]; then
      # Bounded by time, so it leaves only part of the rows behind: after the ceilings.
      log "existing pattern: one INSERT per event in its own transaction, $w connection(s), ${EXISTING_SECONDS}s"
      run_logged "$BIN/order-bench" insert --mode single --conns "$w" --max-seconds "$EXISTING_SECONDS" | json_line > "$OUT/existing_w$w.json"
      log "existing_w$w: $(cat "$OUT/existing_w$w.json")"
    fi
    # The second drain's stream is the latency phase's source.
    if [ "$w" != 2 ]; then redis-cli -u "$REDIS_URL" DEL "$key" > /dev/null; fi
  done
  cluster_drain
  if [ "$PROFILE" = 1 ]; then
    local n=$(( EVENTS < 50000 ? EVENTS : 50000 ))
    key="$PREFIX:profile"
    log "profiling order-ingest draining $n events (1 worker, RUST_LOG=$PROFILE_RUST_LOG)"
    echo "# profiling run (not measured): $n events, 1 worker, perf attached, RUST_LOG=$PROFILE_RUST_LOG" >> "$OUT/commands.txt"
    preload "$key" "$n"
    RUST_LOG="$PROFILE_RUST_LOG" drain 1 "$key" ingest_profile 1
    redis-cli -u "$REDIS_URL" DEL "$key" > /dev/null
  fi
}

# The same drain through a Redis Cluster: a private 3-master/3-replica cluster
# (deploy/local/redis-cluster.sh, ports PORT_BASE+100..105 and their bus ports +10000), the stream
# on one of its masters, 2 workers whose REDIS_URL names that node (they find out it is a cluster
# node themselves, --redis-mode auto, and talk to it through the cluster client). Compared with
# the 2-worker drain on the single server above.
cluster_drain() {
  local ports=() p owner="" key="$PREFIX:cluster"
  for p in $(seq $((PORT_BASE + 100)) $((PORT_BASE + 105))); do ports+=("$p"); done
  CLUSTER_DIR="$OUT/redis-cluster"
  log "starting a private Redis Cluster on ports ${ports[*]}"
  echo "bash deploy/local/redis-cluster.sh start DIR ${ports[*]}" >> "$OUT/commands.txt"
  bash "$ROOT/deploy/local/redis-cluster.sh" start "$CLUSTER_DIR" "${ports[@]}" > "$OUT/redis-cluster.log" 2>&1 \
    || die "the Redis Cluster did not start (see $OUT/redis-cluster.log)"
  # The master serving the key's slot is the node that answers XLEN instead of MOVED.
  for p in "${ports[@]}"; do
    if [[ "$(redis-cli -p "$p" XLEN "$key" 2>/dev/null)" =~ ^[0-9]+$ ]]; then owner="$p"; break; fi
  done
  [ -n "$owner" ] || die "no node of the cluster serves $key"
  REDIS_URL="redis://127.0.0.1:$owner"
  export REDIS_URL
  log "preloading $EVENTS events into $key on the cluster"
  preload "$key" "$EVENTS"
  echo "{\"events\":$EVENTS,\"events_per_s\":$PUBLISH_RATE}" > "$OUT/publish_cluster.json"
  echo "REDIS_URL=redis://127.0.0.1:$owner order-ingest --stream-key $key ...   # x2, through the cluster" >> "$OUT/commands.txt"
  log "draining with 2 workers through the cluster"
  drain 2 "$key" ingest_cluster_w2
  REDIS_URL="$SHARED_REDIS_URL"
  export REDIS_URL
  bash "$ROOT/deploy/local/redis-cluster.sh" stop "$CLUSTER_DIR" > /dev/null 2>&1 || true
  CLUSTER_DIR=""
}

# -------------------------------------------------------------------------- latency phase
latency_phase() {
  log "latency phase: $RATE events/s for ${LATENCY_SECONDS}s, 1 worker"
  echo "# latency" >> "$OUT/commands.txt"
  local source="$PREFIX:drain2"
  if ! has_phase ingest; then
    fresh_database
    migrate
    preload "$source" "$((RATE * LATENCY_SECONDS))"
  fi
  psql -qAtc "TRUNCATE orders" >/dev/null
  local key="$PREFIX:latency"; KEYS+=("$key")
  redis-cli -u "$REDIS_URL" XGROUP CREATE "$key" order-service '$' MKSTREAM > /dev/null
  ingest_start "$key" 3; local pid="$LAST_PID"
  wait_http "http://127.0.0.1:$((PORT_BASE + 13))/health/ready" 30 || die "order-ingest did not become ready"
  reset_hwm "$pid"
  echo "order-ingest --stream-key $key --consumer-group order-service --consumer-name bench-3 --batch-size $BATCH   # 1 worker" >> "$OUT/commands.txt"
  run_logged "$BIN/order-bench" latency --source-stream "$source" --stream "$key" --rate "$RATE" --seconds "$LATENCY_SECONDS" \
    | json_line > "$OUT/latency.json"
  local hwm; hwm=$(hwm_kb "$pid")
  sed -i "s/}\$/,\"hwm_kb\":$hwm}/" "$OUT/latency.json"
  curl -fsS --max-time 5 "http://127.0.0.1:$((PORT_BASE + 13))/metrics" > "$OUT/latency-metrics.txt" || true
  stop_pid "$pid"; forget_pid "$pid"
  log "latency: $(cat "$OUT/latency.json")"
}

# --------------------------------------------------------------------------- outbox phase
outbox_phase() {
  log "outbox phase: fresh database $DB, order-api on $API_ADDR"
  echo "# outbox" >> "$OUT/commands.txt"
  fresh_database
  "$BIN/order-api" --listen "$API_ADDR" --auth-disabled --migrate > "$OUT/order-api-outbox.log" 2>&1 &
  local api=$!; PIDS+=("$api")
  echo "order-api --listen $API_ADDR --auth-disabled --migrate   # DATABASE_URL=$DATABASE_URL, pool: default (10)" >> "$OUT/commands.txt"
  wait_http "http://$API_ADDR/health/ready" 30 || die "order-api did not become ready (see $OUT/order-api-outbox.log)"
  log "seeding $EVENTS orders over $STORES stores"
  run_logged "$BIN/order-bench" seed --count "$EVENTS" --stores "$STORES" --ids-out "$OUT/ids.txt" | json_line > "$OUT/outbox_seed.json"
  export IDS_FILE="$OUT/ids.txt"
  local id; id=$(head -1 "$OUT/ids.txt")
  curl -fsS -X PATCH -H 'Content-Type: application/json' -d '{"pickupLocation":"Dock 1"}' \
    "http://$API_ADDR/orders/$id/fulfillment" | grep -q '"Dock 1"' || die "PATCH /orders/$id/fulfillment failed"
  [ "$(psql -qAtc 'SELECT count(*) FROM order_outbox')" = 1 ] || die "the PATCH left no outbox row"

  # No relay runs here: the outbox grows during the run, as it would with Redis down.
  wrk_run outbox_api_patch "http://$API_ADDR" "$BENCH_DIR/wrk/fulfillment_patch.lua" "$api"
  stop_pid "$api"; forget_pid "$api"
  psql -qAtc "TRUNCATE order_outbox" >/dev/null
  log "pgbench: the fulfillment UPDATE without the outbox, prepared, $CONNECTIONS clients"
  pgbench_run outbox_pgbench_update pgbench_update.sql "orders=$EVENTS"
  psql -qAtc "TRUNCATE order_outbox" >/dev/null
  log "pgbench: the same UPDATE and its outbox INSERT in one transaction, prepared, $CONNECTIONS clients"
  pgbench_run outbox_pgbench_update_outbox pgbench_update_outbox.sql "orders=$EVENTS"

  # Relay throughput: every seeded order as one event, published by one order-ingest.
  psql -qAtc "TRUNCATE order_outbox" >/dev/null
  echo "INSERT INTO order_outbox ... one FULFILLMENT_UPDATED row per seeded order ($EVENTS)" >> "$OUT/commands.txt"
  psql -qAtc "INSERT INTO order_outbox (event_id, order_id, event_time, data)
    SELECT gen_random_uuid(), o.id, o.updated_at,
      json_build_object('change', 'FULFILLMENT_UPDATED', 'previousStatus', o.status, 'order', row_to_json(o))::text
    FROM orders o ORDER BY o.id" >/dev/null
  psql -qAtc "VACUUM ANALYZE order_outbox" >/dev/null
  local key="$PREFIX:updated" in_key="$PREFIX:relay-in" t0 t1 left i
  KEYS+=("$key" "$in_key")
  echo "ORDER_UPDATES_STREAM_KEY=$key order-ingest --stream-key $in_key --metrics-addr 127.0.0.1:$((PORT_BASE + 20))" >> "$OUT/commands.txt"
  t0=$(now)
  ORDER_UPDATES_STREAM_KEY="$key" "$BIN/order-ingest" --stream-key "$in_key" --consumer-name bench-relay \
    --metrics-addr "127.0.0.1:$((PORT_BASE + 20))" > "$OUT/order-ingest-relay.log" 2>&1 &
  local relay=$!; PIDS+=("$relay")
  left=1
  for i in $(seq 1 6000); do
    left=$(psql -qAtc "SELECT count(*) FROM order_outbox")
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  t1=$(now)
  [ "$left" = 0 ] || die "the relay left $left rows after 600 s (see $OUT/order-ingest-relay.log)"
  local hwm; hwm=$(hwm_kb "$relay")
  stop_pid "$relay"; forget_pid "$relay"
  local len; len=$(redis-cli -u "$REDIS_URL" XLEN "$key")
  [ "$len" -ge "$EVENTS" ] || die "the updates stream has $len entries, expected $EVENTS"
  awk -v n="$EVENTS" -v a="$t0" -v b="$t1" -v h="$hwm" \
    'BEGIN {printf "{\"events\":%d,\"seconds\":%.3f,\"events_per_s\":%.1f,\"hwm_kb\":%d}\n", n, b - a, n / (b - a), h}' \
    > "$OUT/outbox_relay.json"
  log "outbox_relay (includes the process start): $(cat "$OUT/outbox_relay.json")"

  # Ceiling: the same payload (the first event the relay published) as pipelined XADDs.
  local payload host port
  payload=$(redis-cli -u "$REDIS_URL" --raw XRANGE "$key" - + COUNT 1 | awk 'prev == "payload" {print; exit} {prev = $0}')
  [ -n "$payload" ] || die "no payload to replay"
  redis-cli -u "$REDIS_URL" DEL "$key" > /dev/null
  host=$(echo "$REDIS_URL" | sed -E 's#^redis://([^@/]*@)?([^:/]+).*#\2#')
  port=$(echo "$REDIS_URL" | sed -E 's#^redis://([^@/]*@)?[^:/]+:([0-9]+).*#\2#')
  [[ "$port" =~ ^[0-9]+$ ]] || port=6379
  echo "redis-benchmark -h $host -p $port -c 1 -P 500 -n $EVENTS XADD $key MAXLEN ~ 1000000 '*' eventId 00000000-0000-0000-0000-000000000000 eventType org.example.order.OrderUpdated payload <the first event's payload, ${#payload} bytes>" >> "$OUT/commands.txt"
  redis-benchmark -h "$host" -p "$port" -c 1 -P 500 -n "$EVENTS" -q \
    XADD "$key" MAXLEN '~' 1000000 '*' eventId 00000000-0000-0000-0000-000000000000 eventType org.example.order.OrderUpdated payload "$payload" \
    > "$OUT/outbox_xadd.txt" 2>&1
  local xadd; xadd=$(tr '\r' '\n' < "$OUT/outbox_xadd.txt" | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
  [ -n "$xadd" ] || die "redis-benchmark gave no result (see $OUT/outbox_xadd.txt)"
  printf '{"events":%s,"events_per_s":%s,"payload_bytes":%s}\n' "$EVENTS" "$xadd" "${#payload}" > "$OUT/outbox_xadd.json"
  redis-cli -u "$REDIS_URL" DEL "$key" > /dev/null
  log "outbox_xadd: $(cat "$OUT/outbox_xadd.json")"
}

# ---------------------------------------------------------------------------------- main
rm -rf "$OUT"; mkdir -p "$OUT"
: > "$OUT/commands.txt"
STARTED=$(now)
install_tools
build
for b in order-bench order-api $({ has_phase ingest || has_phase latency || has_phase outbox || has_phase replica; } && echo order-ingest); do
  [ -x "$BIN/$b" ] || die "missing $BIN/$b"
done
psql -d postgres -qAtc 'SELECT 1' >/dev/null || die "PostgreSQL at $PGHOST:$PGPORT does not answer"
redis-cli -u "$REDIS_URL" PING | grep -q PONG || die "Redis at $REDIS_URL does not answer"
wait_idle
facts
loadavg() { echo "loadavg_$1=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/facts.env"; }
loadavg start
# (if-statements, not `&&` lists: errexit must stay in force inside the phases)
if has_phase api; then api_phase; loadavg after_api; fi
if has_phase ingest; then ingest_phase; loadavg after_ingest; fi
if has_phase latency; then latency_phase; loadavg after_latency; fi
if has_phase outbox; then outbox_phase; loadavg after_outbox; fi
if has_phase replica; then replica_phase; loadavg after_replica; fi
echo "total_seconds=$(awk -v a="$STARTED" -v b="$(now)" 'BEGIN {printf "%.0f", b - a}')" >> "$OUT/facts.env"
mkdir -p "$(dirname "$OUTPUT")"
python3 "$BENCH_DIR/report.py" "$OUT" > "$OUTPUT.tmp"
mv "$OUTPUT.tmp" "$OUTPUT"
log "wrote ${OUTPUT#"$ROOT/"} ($(awk -F= '/^total_seconds/ {print $2}' "$OUT/facts.env") s)"

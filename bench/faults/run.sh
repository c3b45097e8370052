#!/usr/bin/env bash
# Reliability campaign for the order service; writes docs/RELIABILITY.md.
#
#   cargo build --release -p order-api -p order-ingest      # once
#   bench/faults/run.sh                                      # short configuration (~10 min)
#   bench/faults/run.sh --events 50000 --rate 1000           # the 50,000-event campaign (~16 min)
#   bench/faults/run.sh --render-from target/faults/results.json   # rewrite the report only
#   bench/faults/run.sh --stages ingest --scenarios kill,db-outage --events 2000
#   bench/faults/run.sh --bin-dir target/debug --stages rolling   # one stage, debug binaries
#   bench/faults/run.sh --bin-dir target/debug --stages transport # the TLS/PgBouncer tests only
#
# A run of some stages rewrites only their sections of docs/RELIABILITY.md; the other sections
# are kept as the run that wrote them left them (the report's run table says which run wrote what).
#
# Stages (--stages, default all):
#   ingest        6 scenarios (--scenarios kill,group,pg-restart,redis-restart,db-outage,cluster-failover):
#                 events with 1% poison published while a worker is SIGKILLed 10 times / one of three
#                 workers dies for good / PostgreSQL restarts / Redis (AOF) restarts / the database is
#                 silent for 20 s / on a private Redis Cluster (deploy/local/redis-cluster.sh; its ports
#                 and their bus ports +10000 must be free) the stream's master is SIGKILLed twice;
#                 then orderdb, the DLQ and the pending list are reconciled with what was published
#                 (lost, doubled, misfiled, field differences; for the cluster, with what the stream
#                 kept) and the cluster scenario reports how long consumption stalled.
#   api           wrk load (reads + writes) while PostgreSQL is stopped for 5 s; statuses, socket
#                 errors, and a 100 ms probe for the outage and the recovery time.
#   security      401/403 on every route, forged/expired/misaddressed tokens, SQL metacharacters
#                 in every string parameter.
#   schemathesis  schemathesis (PyPI) against /openapi.json with a valid token.
#   fuzz          cargo fuzz targets in fuzz/ (ingest_decode, rest_request), --fuzz-seconds each.
#   rolling       two order-api processes behind HAProxy (Debian's package; installed with apt-get
#                 when missing), constant keep-alive GET load through it; each process in turn is
#                 SIGTERMed (--rolling-delay-ms shutdown delay), must exit 0 within 30 s, is started
#                 again on its port and waited for until HAProxy sees it UP (--rolling-cycles times).
#                 Pass: zero non-2xx and zero connection errors at the client, every exit 0.
#   transport     the TLS and PgBouncer integration tests (tests/tls.rs, tests/pgbouncer.rs of
#                 order-store, order-api, order-ingest) through `cargo test --locked --no-fail-fast
#                 -p CRATE --test tls --test pgbouncer -- --test-threads=1`, one crate at a time,
#                 each build and run bounded (--transport-build-timeout, --transport-timeout);
#                 one report row per test (what it proves, duration, ok/FAILED). The TLS tests
#                 start their own PostgreSQL (ssl=on) and Redis (TLS) with generated certificates;
#                 the PgBouncer tests get the private servers below through TEST_DATABASE_URL /
#                 TEST_REDIS_URL. Ignores --bin-dir (cargo builds the test binaries into
#                 target/debug).
#   outbox        order changes (notes, --outbox-changes, 50,000 for the campaign) through order-api while
#                 two order-ingest processes relay the outbox to a stream of the run's own; the active
#                 relay is SIGKILLed --outbox-kills times, Redis and PostgreSQL are restarted mid-run;
#                 then the stream is reconciled with the database: lost, phantom, doubled (duplicates
#                 must be identical), per-order order (sequence, previousStatus, one note per event).
#   replica       order-api with a read replica (a pg_basebackup -R standby of the private
#                 PostgreSQL, READ_DATABASE_URL) under wrk read load (GET by id, GraphQL order(id));
#                 the replica is stopped at once (pg_ctl -m immediate) for --replica-outage-s and
#                 started again. Pass: 0 failed reads, the replica seen down and up, reads back on
#                 it after its return (bench/faults/replica.py).
#
# Everything runs on loopback against PRIVATE servers started here: a PostgreSQL cluster
# (initdb into a temp dir, spare port) and a Redis with AOF on (spare port). The shared
# PostgreSQL (5432) and Redis (6379) are never touched. Every wait is bounded; on exit (normal,
# error or Ctrl-C) the driver stops what it started, by process id, and removes the servers,
# databases, stream keys and the temp dir (keep them with --keep).
#
# Needs: the release binaries (target/release/order-api, order-ingest, or --bin-dir DIR, e.g.
# target/debug after `cargo build -p order-api -p order-ingest`), wrk (apt-get install wrk),
# haproxy for the rolling stage (installed by it when missing, as root), Debian's pgbouncer
# (/usr/sbin/pgbouncer) and cargo for the transport stage, openssl, psql, PostgreSQL 15 server binaries, redis-server, Python 3.11;
# schemathesis and redis-py are installed into a venv under ${XDG_CACHE_HOME:-~/.cache}/order-faults;
# cargo-fuzz (`cargo install cargo-fuzz`) for the fuzz stage (run with RUSTC_BOOTSTRAP=1 on stable).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/bench/faults"
BIN_DIR="${BIN_DIR:-$ROOT/target/release}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/order-faults"
VENV="$CACHE/venv"

ORIG_ARGS="$*"  # the command line as given, --bin-dir included, for the report
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    -h|--help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" "$HERE/driver.py" --root "$ROOT" --bin-dir "$BIN_DIR" --venv "$VENV" --help | sed -n '/^options/,$p'
      exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

case "$BIN_DIR" in /*) ;; *) BIN_DIR="$PWD/$BIN_DIR" ;; esac
build="cargo build --release -p order-api -p order-ingest"
[[ "$(basename "$BIN_DIR")" != debug ]] || build="cargo build -p order-api -p order-ingest"
for b in order-api order-ingest; do
  [[ -x "$BIN_DIR/$b" ]] || { echo "missing $BIN_DIR/$b: $build" >&2; exit 2; }
done
# A binary older than its sources tests something else than the tree: say so (not fatal).
for pair in order-api:order-api order-ingest:order-ingest order-api:order-store order-ingest:order-store; do
  b="${pair%%:*}"; src="${pair##*:}"
  newer=$(find "$ROOT/$src/src" "$ROOT/$src/Cargo.toml" -newer "$BIN_DIR/$b" -print -quit 2>/dev/null || true)
  [[ -z "$newer" ]] || echo "warning: $BIN_DIR/$b is older than $newer: rebuild ($build)" >&2
done
for tool in psql openssl redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done
command -v wrk >/dev/null || echo "warning: wrk missing (apt-get install -y wrk): the api stage will fail" >&2

if [[ ! -x "$VENV/bin/st" ]] || ! "$VENV/bin/python" -c 'import redis' 2>/dev/null; then
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  timeout 600 "$VENV/bin/pip" install -q schemathesis redis
fi

# The driver owns every process it starts and cleans up on its own exit; this trap only makes
# sure the driver itself goes when this script is interrupted.
DRIVER_PID=""
cleanup() { [[ -n "$DRIVER_PID" ]] && kill -TERM "$DRIVER_PID" 2>/dev/null && wait "$DRIVER_PID" 2>/dev/null; true; }
trap cleanup INT TERM HUP

"$VENV/bin/python" "$HERE/driver.py" --root "$ROOT" --bin-dir "$BIN_DIR" --venv "$VENV" \
  --command-line "bench/faults/run.sh${ORIG_ARGS:+ $ORIG_ARGS}" ${ARGS[@]+"${ARGS[@]}"} &
DRIVER_PID=$!
set +e
wait "$DRIVER_PID"
rc=$?
DRIVER_PID=""
exit $rc

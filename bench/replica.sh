# bench/replica.sh: the `replica` phase of bench/run.sh (sourced by it; not run on its own).
#
# Reads with and without a read replica, informational: both PostgreSQL servers run on this
# one machine, so the replica adds no hardware, only a second server sharing the same cores;
# the numbers say what the routing costs or saves here, not what a real replica gives.
#
# A private primary (initdb, spare port PORT_BASE+20) and a streaming replica of it
# (pg_basebackup -R, PORT_BASE+21), both as the postgres OS user when run as root, in
# $OUT/pg-replica-phase/; the shared server is not used by this phase. N orders are seeded
# into the primary, then the same wrk workloads as the API phase (GET /orders/{id}, GraphQL
# order(id)) run against order-api twice: DATABASE_URL only (every read on the primary), then
# with READ_DATABASE_URL (reads on the replica). After the second run /metrics must show the
# reads on the replica. Results: $OUT/replica_{off,on}_{order_by_id,graphql_order}.json.

REPLICA_DIR="$OUT/pg-replica-phase"
REPLICA_PRIMARY_PORT=$((PORT_BASE + 20))
REPLICA_STANDBY_PORT=$((PORT_BASE + 21))
CLUSTERS=()

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin() { local d; for d in /usr/lib/postgresql/*/bin; do [ -x "$d/$1" ] && { echo "$d/$1"; return; }; done; command -v "$1"; }

# Stops the phase's clusters (on every way out: bench/run.sh's cleanup calls this).
replica_cleanup() {
  local data
  for data in "${CLUSTERS[@]}"; do
    as_postgres "$(pg_bin pg_ctl)" -D "$data" -m immediate stop >/dev/null 2>&1 || true
  done
  CLUSTERS=()
  rm -rf "$REPLICA_DIR"
}

replica_cluster_start() { # data-dir port
  as_postgres "$(pg_bin pg_ctl)" -w -t 60 -D "$1" -l "$1.log" start >/dev/null \
    || die "PostgreSQL in $1 did not start (see $1.log)"
}

replica_phase() {
  log "replica phase: private primary on :$REPLICA_PRIMARY_PORT, streaming replica on :$REPLICA_STANDBY_PORT (informational)"
  echo "# replica (informational: primary and replica on this one machine)" >> "$OUT/commands.txt"
  rm -rf "$REPLICA_DIR"; mkdir -p "$REPLICA_DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$REPLICA_DIR" && chmod o+x "$OUT"
  local primary="$REPLICA_DIR/primary" standby="$REPLICA_DIR/standby"
  as_postgres "$(pg_bin initdb)" -U postgres --auth=trust -E UTF8 --no-sync -D "$primary" >/dev/null
  cat >> "$primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $REPLICA_PRIMARY_PORT
unix_socket_directories = '$REPLICA_DIR'
max_connections = 200
EOF
  CLUSTERS+=("$primary")
  replica_cluster_start "$primary"
  local purl="postgres://postgres@127.0.0.1:$REPLICA_PRIMARY_PORT/orderdb"
  local rurl="postgres://postgres@127.0.0.1:$REPLICA_STANDBY_PORT/orderdb"
  psql -h 127.0.0.1 -p "$REPLICA_PRIMARY_PORT" -d postgres -qAtc "CREATE DATABASE orderdb" >/dev/null
  DATABASE_URL="$purl" "$BIN/order-ingest" migrate > "$OUT/replica-migrate.log" 2>&1 \
    || die "migrations on the private primary failed (see $OUT/replica-migrate.log)"
  log "seeding $EVENTS orders into the private primary"
  DATABASE_URL="$purl" "$BIN/order-bench" seed --count "$EVENTS" --stores "$STORES" --ids-out "$OUT/replica-ids.txt" \
    | json_line > "$OUT/replica-seed.json"
  as_postgres "$(pg_bin pg_basebackup)" -h 127.0.0.1 -p "$REPLICA_PRIMARY_PORT" -U postgres -R -X stream -c fast -D "$standby"
  echo "port = $REPLICA_STANDBY_PORT" >> "$standby/postgresql.conf"
  CLUSTERS+=("$standby")
  replica_cluster_start "$standby"
  echo "initdb + pg_basebackup -R: primary 127.0.0.1:$REPLICA_PRIMARY_PORT, replica 127.0.0.1:$REPLICA_STANDBY_PORT, $EVENTS orders" >> "$OUT/commands.txt"

  export IDS_FILE="$OUT/replica-ids.txt"
  local mode
  for mode in off on; do
    local env=(DATABASE_URL="$purl")
    [ "$mode" = on ] && env+=(READ_DATABASE_URL="$rurl")
    env "${env[@]}" "$BIN/order-api" --listen "$API_ADDR" --auth-disabled > "$OUT/order-api-replica-$mode.log" 2>&1 &
    local api=$!; PIDS+=("$api")
    echo "${env[*]} order-api --listen $API_ADDR --auth-disabled" >> "$OUT/commands.txt"
    wait_http "http://$API_ADDR/health/ready" 30 || die "order-api did not become ready (see $OUT/order-api-replica-$mode.log)"
    if [ "$mode" = on ]; then
      local i
      for i in $(seq 1 100); do
        curl -fsS "http://$API_ADDR/metrics" | grep -q '^order_api_read_replica_up 1' && break
        sleep 0.1
      done
      curl -fsS "http://$API_ADDR/metrics" | grep -q '^order_api_read_replica_up 1' || die "the read replica is not up"
    fi
    wrk_run "replica_${mode}_order_by_id" "http://$API_ADDR" "$BENCH_DIR/wrk/order_by_id.lua" "$api"
    wrk_run "replica_${mode}_graphql_order" "http://$API_ADDR" "$BENCH_DIR/wrk/graphql_order.lua" "$api" GQL_FLAVOR=service
    curl -fsS "http://$API_ADDR/metrics" | grep '^order_api_db_reads_total' > "$OUT/replica_${mode}_reads.txt" || true
    stop_pid "$api"; forget_pid "$api"
  done
  awk '/target="replica"/ {s += $2} END {exit !(s > 0)}' "$OUT/replica_on_reads.txt" \
    || die "with READ_DATABASE_URL no read went to the replica (see $OUT/replica_on_reads.txt)"
  replica_cleanup
}

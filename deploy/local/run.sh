#!/usr/bin/env bash
# The whole system on this machine, without Docker: PostgreSQL and Redis as installed here,
# order-api and order-ingest built from this checkout, a few hundred sample orders published.
# Ctrl-C stops both binaries.
#
#   bash deploy/local/run.sh            # run until Ctrl-C
#   bash deploy/local/run.sh --smoke    # start, publish, read back over REST and GraphQL, stop
#
# Environment: API_PORT (8088), METRICS_PORT (9090), SAMPLE_COUNT (300), CARGO_PROFILE
# (release; the smoke test in CI uses dev to reuse the test build), PG_ADMIN_URL.
set -euo pipefail
cd "$(dirname "$0")/../.."

smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
if [ "$smoke" = 1 ]; then
  # Smoke runs (CI) must not collide with anything else listening on this machine.
  api_port="${API_PORT:-$(free_port)}"
  metrics_port="${METRICS_PORT:-$(free_port)}"
else
  api_port="${API_PORT:-8088}"
  metrics_port="${METRICS_PORT:-9090}"
fi
count="${SAMPLE_COUNT:-300}"
profile="${CARGO_PROFILE:-release}"
pg_admin_url="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

say() { printf '\033[1m== %s\033[0m\n' "$*"; }

say "PostgreSQL and Redis"
bash .ci/services >/dev/null
psql "$pg_admin_url" -v ON_ERROR_STOP=1 -q -f deploy/postgres/init-databases.sql >/dev/null

say "building order-api and order-ingest ($profile)"
cargo build --locked --profile "$profile" -p order-api -p order-ingest
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"

export DATABASE_URL="${DATABASE_URL:-postgres://order_user:order_pass@127.0.0.1:5432/orderdb}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export ORDER_STREAM_KEY="${ORDER_STREAM_KEY:-orders:completed}"
export RUST_LOG="${RUST_LOG:-warn}"

say "migrations"
"$bin/order-ingest" migrate

pids=()
stop() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    pids=()
    return "$status"
  fi
}
trap 'stop; exit 130' INT TERM
trap 'stop' EXIT

say "starting order-api on :$api_port and order-ingest (metrics on :$metrics_port)"
# Each binary in its own session: the terminal's Ctrl-C reaches this script only, and the
# script sends each binary exactly one SIGTERM (a second signal would cut their drain short).
# Locally no load balancer needs the API's shutdown delay.
ORDER_SHUTDOWN_DELAY_MS=0 setsid "$bin/order-api" --listen "127.0.0.1:$api_port" --auth-disabled &
api_pid=$!
pids+=("$api_pid")
setsid "$bin/order-ingest" --metrics-addr "127.0.0.1:$metrics_port" --consumer-name "local-$(hostname)" &
ingest_pid=$!
pids+=("$ingest_pid")

wait_for() { # url, what, pid
  for _ in $(seq 1 100); do
    kill -0 "$3" 2>/dev/null || { echo "$2 exited at start-up" >&2; return 1; }
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "$2 did not become ready ($1)" >&2
  return 1
}
wait_for "http://127.0.0.1:$api_port/health/ready" "order-api" "$api_pid"
wait_for "http://127.0.0.1:$metrics_port/health/ready" "order-ingest" "$ingest_pid"

say "publishing $count sample OrderCompleted events on $ORDER_STREAM_KEY"
published_from=$(date -u +%Y-%m-%dT%H:%M:%SZ)
"$bin/order-ingest" publish-sample --count "$count"

# The newest order of store 1 that came through the stream after this run started.
order_id=""
for _ in $(seq 1 100); do
  order_id=$(curl -fsS "http://127.0.0.1:$api_port/orders?storeNumber=1&size=1&startDate=$published_from" \
    | python3 -c 'import json,sys; o=json.load(sys.stdin)["orders"]; print(o[0]["id"] if o else "")')
  [ -n "$order_id" ] && break
  sleep 0.2
done
[ -n "$order_id" ] || { echo "no sample order arrived in orderdb" >&2; exit 1; }

cat <<EOT

order-api   REST      http://127.0.0.1:$api_port/orders/$order_id
            GraphiQL  http://127.0.0.1:$api_port/graphiql
            metrics   http://127.0.0.1:$api_port/metrics
order-ingest metrics  http://127.0.0.1:$metrics_port/metrics

Try:
  curl -s http://127.0.0.1:$api_port/orders/$order_id

EOT

if [ "$smoke" = 1 ]; then
  say "smoke: reading the order back over REST and GraphQL"
  curl -fsS "http://127.0.0.1:$api_port/orders/$order_id" | python3 -c '
import json, sys
order = json.load(sys.stdin)
assert order["id"] == sys.argv[1], order
print("REST ok:", order["orderNumber"], order["grandTotal"])' "$order_id"
  query="{\"query\":\"{ order(id: \\\"$order_id\\\") { id orderNumber grandTotal lineItems { sku lineTotal } } }\"}"
  curl -fsS -H 'content-type: application/json' -d "$query" "http://127.0.0.1:$api_port/graphql" | python3 -c '
import json, sys
reply = json.load(sys.stdin)
assert not reply.get("errors") and reply["data"]["order"]["id"] == sys.argv[1], reply
print("GraphQL ok:", reply["data"]["order"]["orderNumber"])' "$order_id"
  for port in "$api_port" "$metrics_port"; do
    curl -fsS "http://127.0.0.1:$port/actuator/health" | grep -q '"UP"'
  done
  echo "Actuator health ok"
  say "smoke: stopping"
  stop
  echo "both binaries exited cleanly"
  exit 0
fi

echo "Ctrl-C stops both."
wait

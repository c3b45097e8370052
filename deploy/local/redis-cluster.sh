#!/usr/bin/env bash
# A local Redis Cluster from the redis-server binaries installed here: 6 nodes (3 masters,
# 3 replicas), for trying the service against a cluster and for the tests. Each node keeps its
# files (nodes.conf, append-only file, log, pid file) in DIR/<port>; the cluster bus of a node
# listens on its port + 10000, so that port must be free too.
#
#   bash deploy/local/redis-cluster.sh start DIR [PORT ...]   # default ports 7000..7005
#   bash deploy/local/redis-cluster.sh restart DIR PORT       # start a node killed earlier again
#   bash deploy/local/redis-cluster.sh stop DIR               # SIGKILL every node, remove DIR
#
# Then, for example:
#   REDIS_URL=redis://127.0.0.1:7000 cargo run -p order-ingest -- publish-sample
#
# Environment:
#   CLUSTER_TLS_CERT, CLUSTER_TLS_KEY, CLUSTER_TLS_CA  nodes speak TLS only (clients, replication
#       and the cluster bus); clients use rediss:// and must trust CLUSTER_TLS_CA. The nodes
#       also present CLUSTER_TLS_CERT to each other as a client certificate on the bus (which
#       always asks for one), so it needs both serverAuth and clientAuth extended key usages.
#   CLUSTER_ANNOUNCE_HOSTNAME  nodes announce this host name instead of their IP address in
#       CLUSTER SLOTS/SHARDS and redirections (cluster-preferred-endpoint-type hostname). With
#       TLS, clients check each node's certificate against what it announces: the certificates
#       must name that host name (or, without it, carry the IP address as an IP SAN).
#   CLUSTER_NODE_TIMEOUT_MS (2000)  how long a master may be unreachable before a replica takes over.
set -euo pipefail

command="${1:-}"
dir="${2:-}"
if [ -z "$command" ] || [ -z "$dir" ]; then
  sed -n '2,20p' "$0" >&2
  exit 2
fi
shift 2

case "$command" in
start | restart) ;;
stop)
  for pidfile in "$dir"/*/redis.pid; do
    [ -f "$pidfile" ] || continue
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$dir"
  exit 0
  ;;
*)
  echo "redis-cluster.sh: unknown command $command (start, restart or stop)" >&2
  exit 2
  ;;
esac

ports=("$@")
[ "${#ports[@]}" -eq 0 ] && ports=(7000 7001 7002 7003 7004 7005)
if [ "$command" = start ] && [ "${#ports[@]}" -ne 6 ]; then
  echo "redis-cluster.sh: 6 ports are needed (3 masters, 3 replicas), got ${#ports[@]}" >&2
  exit 2
fi

cli=(redis-cli)
tls_args=()
if [ -n "${CLUSTER_TLS_CERT:-}" ]; then
  cli+=(--tls --cacert "$CLUSTER_TLS_CA")
  tls_args=(--tls-cert-file "$CLUSTER_TLS_CERT" --tls-key-file "$CLUSTER_TLS_KEY"
    --tls-ca-cert-file "$CLUSTER_TLS_CA" --tls-auth-clients no
    --tls-cluster yes --tls-replication yes)
fi
announce_args=()
if [ -n "${CLUSTER_ANNOUNCE_HOSTNAME:-}" ]; then
  announce_args=(--cluster-announce-hostname "$CLUSTER_ANNOUNCE_HOSTNAME"
    --cluster-preferred-endpoint-type hostname)
fi

start_node() { # port: the node keeps its identity and data in DIR/<port> across restarts
  local port="$1" node="$dir/$1" listen
  mkdir -p "$node"
  if [ -n "${CLUSTER_TLS_CERT:-}" ]; then
    listen=(--port 0 --tls-port "$port")
  else
    listen=(--port "$port")
  fi
  redis-server --bind 127.0.0.1 "${listen[@]}" "${tls_args[@]}" "${announce_args[@]}" \
    --cluster-enabled yes --cluster-config-file "$node/nodes.conf" \
    --cluster-node-timeout "${CLUSTER_NODE_TIMEOUT_MS:-2000}" \
    --appendonly yes --save "" --dir "$node" \
    --daemonize yes --pidfile "$node/redis.pid" --logfile "$node/redis.log"
}

wait_for() { # what, seconds, command...
  local what="$1" limit="$2"
  shift 2
  for _ in $(seq $((limit * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "redis-cluster.sh: timed out waiting for $what (logs in $dir/*/redis.log)" >&2
  exit 1
}

if [ "$command" = restart ]; then
  for port in "${ports[@]}"; do
    [ -f "$dir/$port/nodes.conf" ] || { echo "redis-cluster.sh: no node $port in $dir" >&2; exit 2; }
    start_node "$port"
    wait_for "node $port" 10 "${cli[@]}" -p "$port" ping
  done
  exit 0
fi

mkdir -p "$dir"
for port in "${ports[@]}"; do start_node "$port"; done
for port in "${ports[@]}"; do
  wait_for "node $port" 10 "${cli[@]}" -p "$port" ping
done

nodes=()
for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
timeout 60 "${cli[@]}" --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 || {
  echo "redis-cluster.sh: redis-cli --cluster create failed (logs in $dir/*/redis.log):" >&2
  cat "$dir/create.log" >&2
  exit 1
}

settled() { # every node sees all 6 nodes and every slot served; every replica in sync
  local port info
  for port in "${ports[@]}"; do
    info="$("${cli[@]}" -p "$port" cluster info)"
    grep -q '^cluster_state:ok' <<<"$info" || return 1
    grep -q '^cluster_known_nodes:6' <<<"$info" || return 1
    info="$("${cli[@]}" -p "$port" info replication)"
    if grep -q '^role:slave' <<<"$info"; then
      grep -q '^master_link_status:up' <<<"$info" || return 1
    fi
  done
}
wait_for "the cluster to settle" 30 settled
echo "redis cluster up: ${nodes[*]} (files in $dir)"

"""The `replica` stage: a read replica lost and back under read load.

A streaming replica of the campaign's private PostgreSQL (`pg_basebackup -R`, spare port, as
the postgres OS user when root) serves order-api's reads (READ_DATABASE_URL). wrk reads
(`GET /orders/{id}` and GraphQL `order(id)`) for --replica-seconds; a third of the way in the
replica is stopped at once (`pg_ctl -m immediate`: connections cut, new ones refused), and
started again after --replica-outage-s. A 100 ms probe records every read's status and time.
Pass: every read answered 200 (no other status, no socket error or timeout), the replica was
seen down and up again (`order_api_read_replica_up`), and reads went back to it after it
returned (`order_api_db_reads_total{target="replica"}` grew after the restart).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request

import api
import ingest
from infra import PG_BIN, free_port, log, on_cleanup, spawn, stop, wait_port

READ_LUA = r"""
-- Reads only: GET /orders/{id} and GraphQL order(id), half each; counts every status.
local ids = {}
local token = os.getenv("FAULTS_TOKEN")
for line in io.lines(os.getenv("FAULTS_IDS")) do ids[#ids + 1] = line end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function request()
  local h = { ["Authorization"] = "Bearer " .. token }
  local id = ids[math.random(#ids)]
  if math.random(2) == 1 then
    return wrk.format("GET", "/orders/" .. id, h)
  end
  h["Content-Type"] = "application/json"
  return wrk.format("POST", "/graphql", h,
    '{"query":"query($id: ID!) { order(id: $id) { id status } }","variables":{"id":"' .. id .. '"}}')
end
function response(status, headers, body)
  if status == 200 and body:find('"errors"') then status = 299 end
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do parts[#parts + 1] = string.format('"%d":%d', k, v) end
  io.write("WRK_STATUSES {" .. table.concat(parts, ",") .. "}\n")
  io.write(string.format('WRK_ERRORS {"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d}\n',
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    summary.errors.status))
  io.write(string.format('WRK_LATENCY {"p50_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f}\n',
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


class Standby:
    """A hot standby of the campaign's PostgreSQL, on a spare port."""

    def __init__(self, primary, workdir: str):
        self.dir = os.path.join(workdir, "replica-data")
        self.logfile = os.path.join(workdir, "replica.log")
        self.port = free_port()
        self.as_user = primary.as_user
        self._run(["pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                   "-R", "-X", "stream", "-c", "fast", "-D", self.dir])
        if os.geteuid() == 0:
            open(self.logfile, "a").close()
            shutil.chown(self.logfile, "postgres", "postgres")
        on_cleanup(self.destroy)
        self.start()

    def _run(self, args, check=True):
        return subprocess.run(self.as_user + [f"{PG_BIN}/{args[0]}", *args[1:]], check=check,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)

    def start(self) -> None:
        self._run(["pg_ctl", "-D", self.dir, "-l", self.logfile, "-w", "-t", "60", "-o",
                   f"-p {self.port} -c listen_addresses=127.0.0.1 -c hot_standby=on -c max_connections=200 "
                   f"-k {os.path.dirname(self.dir)}", "start"])

    def stop(self) -> None:
        self._run(["pg_ctl", "-D", self.dir, "-m", "immediate", "-w", "-t", "60", "stop"], check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def metrics(base: str) -> str:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        return r.read().decode()


def series(text: str, pattern: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(r"^" + pattern + r"\S* (\S+)$", text, re.M))


def replica_reads(base: str) -> float:
    return series(metrics(base), r'order_api_db_reads_total\{[^}]*target="replica"')


def wait_up(base: str, up: int, timeout: float) -> float | None:
    """Seconds until order_api_read_replica_up is `up`, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if series(metrics(base), "order_api_read_replica_up") == up:
            return round(time.monotonic() - t0, 2)
        time.sleep(0.1)
    return None


def run(ctx, keys, logdir) -> dict:
    pg, args = ctx.pg, ctx.args
    db = "fault_replica"
    pg.create_db(db)
    ingest.migrate(ctx, pg.url(db), logdir)
    orders = api.seed_orders(ctx, db, logdir, args.api_orders)
    standby = Standby(pg, ctx.args.workdir)
    ids_file = os.path.join(logdir, "replica-ids.txt")
    open(ids_file, "w").write("".join(o["id"] + "\n" for o in orders))
    lua = os.path.join(logdir, "reads.lua")
    open(lua, "w").write(READ_LUA)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DATABASE_URL=pg.url(db), READ_DATABASE_URL=pg.url(db, standby.port),
               RUST_LOG="warn", DB_CONNECT_TIMEOUT_MS="2000", ORDER_DB_QUERY_TIMEOUT_MS="5000",
               DB_POOL_SIZE="16")
    proc = spawn([ctx.bin("order-api"), "--listen", f"127.0.0.1:{port}", "--jwt-public-key-file",
                  keys.public, "--jwt-issuers", api.ISSUER, "--jwt-audience", api.AUDIENCE],
                 os.path.join(logdir, "order-api-replica.log"), env=env)
    if not wait_port(port, 30):
        raise RuntimeError("order-api did not start (see order-api-replica.log)")
    if wait_up(base, 1, 30) is None:
        raise RuntimeError("the read replica never came up in order-api's metrics")
    token = keys.rs256(api.claims())
    seconds, outage = args.replica_seconds, args.replica_outage_s
    probe_log: list[tuple[float, int, float]] = []
    stop_probe = threading.Event()

    def probe():
        while not stop_probe.is_set():
            t = time.monotonic()
            status, _, took = api.request(base, "GET", f"/orders/{orders[0]['id']}", token, timeout=5)
            probe_log.append((t, status, took))
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))

    wrk_out = os.path.join(logdir, "wrk-replica.out")
    wrk = subprocess.Popen(["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "5s", "-s", lua, base],
                           stdout=open(wrk_out, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
                           env=dict(os.environ, FAULTS_TOKEN=token, FAULTS_IDS=ids_file))
    th = threading.Thread(target=probe, daemon=True)
    th.start()
    t0 = time.monotonic()
    time.sleep(seconds / 3)
    reads_before_loss = replica_reads(base)
    t_down = time.monotonic()
    standby.stop()
    seen_down_s = wait_up(base, 0, max(outage, 5))
    time.sleep(max(0.0, outage - (time.monotonic() - t_down)))
    standby.start()
    t_up = time.monotonic()
    back_s = wait_up(base, 1, 30)
    reads_at_return = replica_reads(base)
    try:
        wrk.wait(seconds + 60)
    except subprocess.TimeoutExpired:
        stop(wrk)
    stop_probe.set()
    th.join(10)
    reads_after = replica_reads(base)
    text = metrics(base)
    api_alive = proc.poll() is None
    stop(proc)
    standby.destroy()
    out = open(wrk_out).read()

    def grab(tag):
        m = re.search(tag + r" (\{.*\})", out)
        return json.loads(m.group(1)) if m else {}

    statuses, errors, latency = grab("WRK_STATUSES"), grab("WRK_ERRORS"), grab("WRK_LATENCY")
    total = re.search(r"(\d+) requests in", out)
    during = [(s, took) for t, s, took in probe_log if t_down <= t < t_up]
    reasons = {m.group(1) + "/" + m.group(2): int(float(m.group(3))) for m in re.finditer(
        r'^order_api_db_reads_total\{reason="(\w+)",target="(\w+)"\} (\S+)$', text, re.M)}
    result = {
        "seconds": seconds, "outage_s": outage, "orders": len(orders),
        "replica_down_at_s": round(t_down - t0, 1), "replica_up_at_s": round(t_up - t0, 1),
        "seen_down_after_s": seen_down_s, "seen_up_after_s": back_s,
        "wrk_requests": int(total.group(1)) if total else None,
        "wrk_statuses": statuses, "wrk_errors": errors, "wrk_latency": latency,
        "probe_reads": len(probe_log), "probe_not_200": sum(1 for _, s, _ in probe_log if s != 200),
        "probe_max_s_during_outage": round(max((d for _, d in during), default=0), 3),
        "replica_reads_before_loss": reads_before_loss,
        "replica_reads_after_return": reads_after - reads_at_return,
        "reads_by_reason": reasons, "api_alive": api_alive,
    }
    failed = sum(v for k, v in statuses.items() if k != "200") + sum(errors.get(k, 0) for k in
                                                                        ("connect", "read", "write", "timeout"))
    result["failed_reads"] = failed + result["probe_not_200"]
    result["pass"] = (result["failed_reads"] == 0 and bool(statuses) and seen_down_s is not None
                      and back_s is not None and reads_before_loss > 0
                      and result["replica_reads_after_return"] > 0 and api_alive)
    log(f"replica lost and back: {'PASS' if result['pass'] else 'FAIL'} {json.dumps(result)}")
    return result


def render(w, title: str, r: dict) -> None:
    w(f"## {title}")
    w("")
    if "error" in r:
        w(f"Stage failed to run: `{r['error']}`")
        w("")
        return
    w(f"order-api with a read replica (a `pg_basebackup -R` hot standby of the campaign's PostgreSQL, "
      f"`READ_DATABASE_URL`), {r['orders']} orders; wrk reads (`GET /orders/{{id}}` and GraphQL `order(id)`, "
      f"2 threads, 16 connections) for {r['seconds']} s plus a 100 ms probe. The replica was stopped at once "
      f"(`pg_ctl -m immediate`) at {r['replica_down_at_s']} s and started again at {r['replica_up_at_s']} s "
      f"({r['outage_s']} s down).")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| reads (wrk) | {r['wrk_requests']}; statuses {json.dumps(r['wrk_statuses'])} (299: a 200 with GraphQL errors) |")
    w(f"| socket errors (wrk) | {json.dumps(r['wrk_errors'])} |")
    w(f"| latency (wrk) | {json.dumps(r['wrk_latency'])} |")
    w(f"| probe reads | {r['probe_reads']}, not 200: {r['probe_not_200']}; slowest while the replica was down "
      f"{r['probe_max_s_during_outage']} s |")
    w(f"| replica seen down / up by order-api | after {r['seen_down_after_s']} s / after {r['seen_up_after_s']} s |")
    w(f"| reads on the replica | {r['replica_reads_before_loss']:.0f} before the loss, "
      f"{r['replica_reads_after_return']:.0f} after it returned |")
    w(f"| reads by target/reason | {', '.join(f'{k} {v}' for k, v in sorted(r['reads_by_reason'].items()))} |")
    w(f"| **failed reads** | **{r['failed_reads']}** |")
    w(f"| result | {'PASS' if r['pass'] else 'FAIL'} |")
    w("")

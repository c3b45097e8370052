"""Driver of bench/faults/run.sh: runs the stages and writes docs/RELIABILITY.md.

Run it through run.sh (which prepares the venv and checks the binaries); `--help` lists flags.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import infra  # noqa: E402
from infra import PrivatePostgres, PrivateRedis, log  # noqa: E402

SCENARIOS = {
    "kill": "(a) worker SIGKILLed at random moments and restarted",
    "group": "(b) three workers, one SIGKILLed for good mid-run",
    "pg-restart": "(c) PostgreSQL restarted mid-run",
    "redis-restart": "(d) Redis (AOF on) restarted mid-run",
    "db-outage": "(e) database unreachable (silent partition)",
    "cluster-failover": "(f) Redis Cluster: the stream's master SIGKILLed twice, a replica promoted each time",
}
STAGES = ["ingest", "api", "security", "schemathesis", "fuzz", "rolling", "transport", "outbox", "replica"]


class Ctx:
    def __init__(self, args):
        self.args = args
        self.root = args.root
        self.venv = args.venv
        self.workdir = args.workdir
        self.pg = None
        self.redis = None

    def bin(self, name):
        return os.path.join(self.args.bin_dir, name)


def parse():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=5000, help="events per ingest scenario (campaign: 50000)")
    p.add_argument("--rate", type=int, default=500, help="events published per second")
    p.add_argument("--poison-pct", type=float, default=1.0, help="percent of events that are poison")
    p.add_argument("--kills", type=int, default=10, help="SIGKILLs in scenario (a)")
    p.add_argument("--outage-s", type=float, default=20, help="database outage of scenario (e), seconds")
    p.add_argument("--drain-timeout", type=float, default=180, help="seconds to wait for a scenario to drain")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of " + ",".join(SCENARIOS))
    p.add_argument("--stages", default=",".join(STAGES), help="comma list of " + ",".join(STAGES))
    p.add_argument("--api-seconds", type=int, default=30, help="wrk duration of the API-under-fault stage")
    p.add_argument("--api-outage-s", type=float, default=5, help="how long PostgreSQL stays down under wrk")
    p.add_argument("--api-orders", type=int, default=2000, help="orders seeded for the API stages")
    p.add_argument("--fuzz-seconds", type=int, default=60, help="seconds per fuzz target")
    p.add_argument("--st-examples", type=int, default=50, help="schemathesis examples per operation")
    p.add_argument("--st-seconds", type=int, default=240, help="schemathesis time budget")
    p.add_argument("--rolling-cycles", type=int, default=3, help="rolling stage: SIGTERM+restart cycles over both API processes")
    p.add_argument("--rolling-delay-ms", type=int, default=2000, help="rolling stage: order-api's shutdown delay (ORDER_SHUTDOWN_DELAY_MS)")
    p.add_argument("--rolling-rate", type=int, default=400, help="rolling stage: client requests per second through HAProxy")
    p.add_argument("--rolling-workers", type=int, default=8, help="rolling stage: client threads (one keep-alive connection each)")
    p.add_argument("--rolling-settle-s", type=float, default=3, help="rolling stage: seconds of load between restarts")
    p.add_argument("--replica-seconds", type=int, default=30, help="replica stage: seconds of read load")
    p.add_argument("--replica-outage-s", type=float, default=10, help="replica stage: how long the read replica stays down")
    p.add_argument("--transport-timeout", type=int, default=900,
                   help="transport stage: seconds each crate's `cargo test` run may take (the build is bounded apart)")
    p.add_argument("--transport-build-timeout", type=int, default=2400,
                   help="transport stage: seconds each crate's test build may take (including waiting for cargo's lock)")
    p.add_argument("--outbox-changes", type=int, default=5000,
                   help="outbox stage: order changes through order-api (campaign: 50000)")
    p.add_argument("--outbox-kills", type=int, default=10, help="outbox stage: SIGKILLs of the active relay")
    p.add_argument("--outbox-clients", type=int, default=8, help="outbox stage: client threads sending changes")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep databases, stream keys and the work dir")
    p.add_argument("--out", default=None, help="report path (default docs/RELIABILITY.md)")
    p.add_argument("--root", required=True)
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--venv", required=True)
    p.add_argument("--workdir", default=None)
    p.add_argument("--command-line", default="")
    p.add_argument("--render-from", default=None,
                   help="only rewrite the report from a results.json of an earlier run (target/faults/results.json)")
    return p.parse_args()


def machine_facts(ctx) -> dict:
    def cmd(*a):
        try:
            return subprocess.run(a, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "?"
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024 // 1024} GiB"
    except OSError:
        pass
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(), "cpu": cpu, "memory": mem, "kernel": platform.release(),
        "rustc": cmd("rustc", "--version"), "postgres": cmd(f"{infra.PG_BIN}/postgres", "--version"),
        "redis": cmd("redis-server", "--version"),
        "pgbouncer": cmd("/usr/sbin/pgbouncer", "--version") if os.path.exists("/usr/sbin/pgbouncer") else "missing",
        "openssl": cmd("openssl", "version"),
        "haproxy": cmd("haproxy", "-v") if shutil.which("haproxy") else "missing",
        "wrk": cmd("wrk", "-v") if shutil.which("wrk") else "missing",
        "schemathesis": cmd(os.path.join(ctx.venv, "bin", "st"), "--version"),
        "cargo_fuzz": cmd("cargo", "fuzz", "--version"),
        "git": cmd("git", "-C", ctx.root, "rev-parse", "--short", "HEAD")
        + (" (+ uncommitted changes)" if cmd("git", "-C", ctx.root, "status", "--porcelain") not in ("", "?") else ""),
        "load": open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?",
    }


# What earlier runs of this campaign found; each is fixed and has a regression test.
FINDINGS = [
    ("An order with U+0000 in any text field (PostgreSQL text and JSONB cannot hold it) failed the "
     "INSERT for a reason no retry fixes; alone in its batch it was retried forever as an \"outage\", "
     "stalling every entry behind it.",
     "`NewOrder::validate` refuses NUL in every text field (`invalid_value`, dead-lettered alone)",
     "order-store `a_nul_character_anywhere_is_rejected_alone`; order-ingest "
     "`an_order_with_a_nul_character_is_dead_lettered_and_does_not_stall_the_stream`"),
    ("A line-item or discount amount with an absurd exponent (`1E999999999`) passed validation and was "
     "rescaled to two decimals while writing JSONB, allocating a billion digits: the worker hung "
     "(CPU-bound, no timeout can cut it) on a poison pill.",
     "`money::check_magnitude` bounds every amount inside the JSONB columns (`invalid_value`)",
     "order-store `an_absurd_line_item_amount_is_rejected_quickly`"),
    ("A NUL byte in a path segment, query parameter, body field or GraphQL argument reached PostgreSQL "
     "and came back as a 500 (security stage and schemathesis ST101).",
     "order-api `Checks::required` / `Checks::text` answer 400 naming the field",
     "order-api `rest::nul_characters_are_a_400_not_a_500`"),
    ("405 responses had no `Allow` header (RFC 9110; schemathesis ST204).",
     "`finish` in order-api/src/layers.rs adds `Allow` from `routes::ROUTES`",
     "order-api `rest::method_not_allowed_lists_the_allowed_methods`"),
    ("After Redis restarts and reloads the group from the AOF, `XINFO GROUPS` reports a lag that never "
     "drains (its entries-read counter is off) although the group has read everything; "
     "`order_ingest_group_lag` passed it on, so a lag alert would fire forever (scenario d).",
     "`Probe::group_state` reports 0 when the group's last-delivered id is the stream's last id",
     "order-ingest `group_lag_is_zero_when_the_group_has_read_the_whole_stream`"),
    ("`/openapi.json` did not state limits the API enforces (store number 1..2000 in the path, "
     "orderNumber/customerId lengths, int64 bounds of limit/offset/page, nullable fulfillment fields, "
     "non-empty GraphQL query): schemathesis flagged valid-looking requests refused.",
     "constraints stated in the OpenAPI annotations of order-api/src/routes/ (the document is "
     "generated from them; order-api test `openapi_states_the_enforced_constraints`)",
     "schemathesis stage"),
    ("The outbox relay sent a batch's XADDs as a plain pipeline. A Redis that finished loading its AOF "
     "mid-pipeline refused the first commands (LOADING) and applied the rest; the retry then published "
     "the refused rows behind later changes of the same orders (stage outbox: 87 events out of order "
     "in 50,000).",
     "the batch's XADDs in one MULTI/EXEC (order-ingest/src/outbox.rs): all of a batch or none of it",
     "outbox stage (0 out of order since); order-ingest `cluster::the_relay_publishes_every_change_to_a_redis_cluster` runs the transaction on a cluster"),
]


SECTION_TITLES = {
    "ingest": "1. Ingest campaign",
    "api": "2. API under faults",
    "fuzz": "3. Fuzzing (cargo fuzz, libFuzzer)",
    "schemathesis": "4. Schema fuzzing (schemathesis)",
    "security": "5. Security",
    "rolling": "6. Rolling restart behind HAProxy",
    "transport": "7. TLS and connection poolers",
    "outbox": "8. Outbox under faults",
    "replica": "9. Read replica lost and back under read load",
}
_START = re.compile(r"^<!-- section (\w+) run (.+?) -->$")
_RUNS = re.compile(r"^<!-- runs: (\{.*\}) -->$", re.M)


def _bare(title: str) -> str:
    return re.sub(r"^\d+\.\s*", "", title.strip())


def read_report(path):
    """The runs and the stage sections of an existing report: ({run id: run}, {stage: (run id,
    text)}). Reads the markers write_report puts around each section; a report written before
    the markers existed (one run, `## N. Title` headings, `Command of this run:`) is read by its
    headings, its command line and its machine table."""
    if not os.path.exists(path):
        return {}, {}
    text = open(path).read()
    lines = text.splitlines()
    sections = {}
    if any(_START.match(line) for line in lines):
        m = _RUNS.search(text)
        runs = json.loads(m.group(1)) if m else {}
        key = None
        buf = []
        for line in lines:
            start = _START.match(line)
            if key is None and start:
                key, rid, buf = start.group(1), start.group(2), []
            elif key is not None and line == f"<!-- /section {key} -->":
                sections[key] = (rid, "\n".join(buf).rstrip("\n"))
                key = None
            elif key is not None:
                buf.append(line)
        return runs, sections
    # A report from before the markers: one run.
    facts, command, heading, in_code = {}, "?", None, False
    bare = {_bare(t): k for k, t in SECTION_TITLES.items()}
    buf: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("## "):
            heading = line[3:].strip()
            if _bare(heading) in bare:
                buf[bare[_bare(heading)]] = []
        if line.rstrip().endswith("Command of this run:"):
            command = next((x.strip() for x in lines[i + 1:] if x.strip()), "?")
        if heading == "Machine" and line.startswith("| ") and not line.startswith(("| fact", "|---")):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 2:
                facts[cells[0]] = cells[1]
        if heading and _bare(heading) in bare:
            buf[bare[_bare(heading)]].append(line)
    took = re.search(r"^Run took (.+?) min\.", text, re.M)
    rid = facts.get("date", "an earlier run")
    runs = {rid: {"command": command, "took": f"{took.group(1)} min" if took else "?", "facts": facts}}
    return runs, {k: (rid, "\n".join(v).rstrip("\n")) for k, v in buf.items()}


def render_rolling(w, r):
    w(f"## {SECTION_TITLES['rolling']}")
    w("")
    if "settings" not in r:
        w(f"ERROR: {r.get('error')}")
        w("")
        return
    delay = r["delay_ms"]
    w(f"Two `order-api` processes ({r['bin_dir']}) over the private PostgreSQL ({r['orders']} ingested orders) "
      f"behind HAProxy ({r['haproxy']}) on spare loopback ports. {r['workers']} client threads, each with one "
      f"persistent keep-alive connection (Python `http.client`) to HAProxy, sent `GET /orders/{{id}}` with a valid "
      f"RS256 token at {r['rate']}/s in total for the whole stage, counting every answer by status and every "
      f"exception by kind. In each of {r['cycles']} cycles each process in turn was sent SIGTERM, waited for (it "
      f"must exit 0 on its own within a {r['grace_s']:g} s grace period, Kubernetes' default), started again on "
      f"the same port, and waited for until HAProxy's health check saw it UP; {r['settle_s']:g} s of load between "
      f"steps. order-api ran with a shutdown delay of {delay} ms (`ORDER_SHUTDOWN_DELAY_MS={delay}`"
      + (f", `--shutdown-delay-ms {delay}`" if r["binary_knows_delay_flag"] else "") +
      "): HAProxy checks `/health/ready` every 500 ms and one failed check marks a server DOWN, so it stops "
      f"routing to a draining process within about 0.5 s plus one check; {delay} ms leaves a wide margin.")
    if not r["binary_knows_delay_flag"]:
        w("")
        w("**The binary under test did not know `--shutdown-delay-ms`** (its `--help` does not list it): it "
          "predates the graceful drain, so this run measures the old behaviour on SIGTERM.")
    w("")
    w("HAProxy settings (`haproxy.cfg` written into the work dir by `bench/faults/rolling.py`):")
    w("")
    w("| setting | value |")
    w("|---|---|")
    for k, v in r["settings"].items():
        w(f"| {k} | {v} |")
    w("")
    w("Retries do not hide failures here: HAProxy retries (on the other server) only a request whose "
      "*connection* to a server failed, so the request never reached a server; an empty response, a reset "
      "after the request was sent, a response timeout or a 5xx reaches the client (as a 502/503/504, or, when a "
      "reused keep-alive connection to a server was closed under a request, as its own connection closed "
      "without an answer) and counts as a failure. The retries and redispatches HAProxy did make are listed "
      "below. To see that the stage catches a process that stops at once, run it with `--rolling-delay-ms 0`.")
    w("")
    cl = r.get("client", {})
    rolls = r.get("rolls", [])
    lb = r.get("lb_stats", {})
    srv = {k.split("/")[1]: v for k, v in lb.items() if isinstance(v, dict) and k.startswith("order_api/")}
    backend = srv.get("BACKEND", {})
    exits = [x["exit_s"] for x in rolls]
    downs = [x["lb_down_after_s"] for x in rolls if x.get("lb_down_after_s") is not None]
    ups = [x["lb_up_after_start_s"] for x in rolls if x.get("lb_up_after_start_s") is not None]
    mm = lambda xs: f"{min(xs)} / {max(xs)} s" if xs else "-"  # noqa: E731
    w("| measure | value |")
    w("|---|---|")
    w(f"| cycles (SIGTERMs) | {r['cycles']} ({len(rolls)}) |")
    w(f"| requests | {cl.get('requests', '-')} in {cl.get('seconds', '-')} s |")
    w(f"| by status | {', '.join(f'{k}: {v}' for k, v in cl.get('statuses', {}).items()) or '-'} |")
    errs = cl.get("errors", {})
    w(f"| connection errors | {cl.get('connection_errors', '-')}"
      + (f" ({', '.join(f'{k}: {v}' for k, v in errs.items())})" if errs else "") + " |")
    w(f"| exit codes | {', '.join(str(x) for x in r.get('exit_codes', [])) or '-'} |")
    w(f"| exited on their own within the grace period | {sum(1 for x in rolls if x['exited_on_its_own'])} / {len(rolls)} |")
    w(f"| drain time, SIGTERM to exit (min / max) | {mm(exits)} |")
    w(f"| HAProxy marked it DOWN, after SIGTERM (min / max) | {mm(downs)} |")
    w(f"| marked DOWN before the process exited | {sum(1 for x in rolls if x.get('lb_down_before_exit'))} / {len(rolls)} |")
    w(f"| restarted process seen UP by HAProxy, after start (min / max) | {mm(ups)} |")
    w(f"| HAProxy retries / redispatches / connection errors / response errors | {backend.get('wretr', '-')} / "
      f"{backend.get('wredis', '-')} / {backend.get('econ', '-')} / {backend.get('eresp', '-')} |")
    lat = cl.get("latency_ms", {})
    w(f"| client latency p50 / p99 / max | {lat.get('p50')} / {lat.get('p99')} / {lat.get('max')} ms |")
    w(f"| client connections opened | {cl.get('connections_opened', '-')} |")
    w(f"| result | {'pass' if r.get('pass') else '**FAIL**'} |")
    w("")
    if rolls:
        w("| cycle | process | exit code | SIGTERM to exit | SIGTERM to HAProxy DOWN | start to HAProxy UP |")
        w("|---|---|---|---|---|---|")
        for x in rolls:
            down = "never marked DOWN" if x.get("lb_down_after_s") is None else f"{x['lb_down_after_s']} s"
            up = "never seen UP" if x.get("lb_up_after_start_s") is None else f"{x['lb_up_after_start_s']} s"
            w(f"| {x['cycle']} | {x['process']} | {x['exit_code']}{'' if x['exited_on_its_own'] else ' (SIGKILL after grace)'} | "
              f"{x['exit_s']} s | {down} | {up} |")
        w("")
    if r.get("error"):
        w(f"ERROR: {r['error']}")
        w("")
    fails = cl.get("failures", [])
    if fails:
        w(f"First failures at the client (seconds since the load started; {len(fails)} shown):")
        w("")
        for f in fails[:15]:
            w(f"- {f['t']} s: {f['kind']}: `{f['detail'][:160]}`")
        w("")


def write_report(ctx, facts, results, path, started):
    """Renders the report. Each stage's section sits between stable markers; a section whose
    stage this run did not do is kept verbatim from the existing report at `path` (with the
    run that wrote it), so `--stages rolling` adds its section without erasing the others."""
    a = argparse.Namespace(**{**vars(ctx.args), **results.get("_args", {})})
    sections: dict[str, list[str]] = {}

    def section(key):
        sections[key] = []
        return sections[key].append

    w = None
    ing = results.get("ingest")
    if ing:
        w = section("ingest")
        w("## 1. Ingest campaign")
        w("")
        w(f"Per scenario: a fresh database and stream; {a.events} events published at {a.rate}/s "
          f"(plus a prelude of 10 orders whose numbers the conflict poison reuses), of which {a.poison_pct}% poison "
          "spread over every payload-caused permanent failure class (invalid_json, not_cloudevent, missing_order, "
          "invalid_order, invalid_value, order_number_conflict), 0.5% events of another type (must be skipped), "
          "0.5% re-publications of an earlier order under a new event id (must not double). Valid orders use "
          "checkout's formats: Java-double money (`10.0`, `0`, `1.2345678E7`), 0/3/6/9-digit instants, "
          "seconds-less `time`, missing `subject`. After the drain every stored row is compared field by field "
          "with what was published (money as exact decimals), the DLQ is matched entry by entry (streamId, "
          "errorClass, payload byte for byte), and the group's pending list must be empty.")
        w("")
        w("| scenario | events | valid orders | poison | kills | restarts | lost | doubled | misfiled | fields differ | pending after | drained in | result |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in ing:
            if "error" in r:
                w(f"| {r['title']} | - | - | - | - | - | - | - | - | - | - | - | ERROR: {r['error'][:120]} |")
                continue
            w(f"| {r['title']} | {r['events']} | {r['valid_orders']} | {r['poison']} | {r['kills']} | {r['restarts']} | "
              f"{r['lost']} | {r['doubled']} | {r['misfiled']} | {r['field_mismatches']} | {r['pending_after']} | "
              f"{r['drain_s']} s after last publish | {'pass' if r['pass'] else '**FAIL**'} |")
        w("")
        w("- lost: valid orders missing from orderdb + poison entries missing from the DLQ.")
        w("- doubled: rows stored twice + dead letters written more than once for one stream entry.")
        w("- misfiled: poison stored as an order, valid or other-type entries dead-lettered, rows nobody "
          "published, dead letters with the wrong errorClass or an altered payload.")
        w("- restarts: process restarts of the worker (a) or of the server (c, d, f); (b) has none by design.")
        w("- (f) runs on a private Redis Cluster (3 masters, 3 replicas, `cluster-node-timeout 2000`, "
          "deploy/local/redis-cluster.sh), the workers seeded with every node. Redis replicates asynchronously: "
          "an entry the dying master acknowledged but had not passed on is lost by Redis, not by ingest; such "
          "entries are counted apart (lost by Redis) and the reconciliation is against what the stream kept. The "
          "stall is the time from the kill to the first order stored after the promotion.")
        w("")
        for r in ing:
            if "error" in r:
                continue
            w(f"- {r['title']}: faults {'; '.join(r['faults']) or 'none'}; poison by class {r['poison_by_class']}; "
              f"publisher retries {r['publisher_retries']}; worker starts {r['worker_starts']}"
              + (f"; notes {r['notes']}" if r['notes'] else "")
              + (f"; crashed workers {r['workers_crashed']}" if r['workers_crashed'] else "")
              + (f"; consumption stalled {r['stalls_s']} s; entries lost by Redis {r.get('lost_by_redis', 0)}"
                 if r.get("stalls_s") else "")
              + ("" if r["pass"] else f"; examples {json.dumps(r['examples'])[:600]}"))
        w("")
    api = results.get("api")
    if api:
        w = section("api")
        w("## 2. API under faults")
        w("")
        if "error" in api:
            w(f"ERROR: {api['error']}")
        else:
            w(f"wrk (2 threads, 16 connections, {api['seconds']} s, 5 s timeout) on a mix of 55% `GET /orders/{{id}}`, "
              "15% search by store, 10% by customer, 20% `POST /orders/{id}/notes`, over "
              f"{api['orders']} ingested orders, with a valid RS256 token. PostgreSQL was stopped (`pg_ctl stop -m fast`) "
              f"at {api['pg_down_at_s']} s and started again at {api['pg_up_at_s']} s. A probe issued one "
              "`GET /orders/{id}` every 100 ms to time the outage and the recovery.")
            w("")
            w("| measure | value |")
            w("|---|---|")
            w(f"| wrk requests | {api['wrk_requests']} |")
            for k, v in sorted(api["wrk_statuses"].items()):
                w(f"| wrk status {k} | {v} |")
            w(f"| wrk socket errors (connect/read/write/timeout) | {api['wrk_errors'].get('connect')}/"
              f"{api['wrk_errors'].get('read')}/{api['wrk_errors'].get('write')}/{api['wrk_errors'].get('timeout')} |")
            w(f"| wrk latency p50 / p99 / max | {api['wrk_latency'].get('p50_ms')} / {api['wrk_latency'].get('p99_ms')} / "
              f"{api['wrk_latency'].get('max_ms')} ms |")
            if sum(api["probe_before"].values()):  # (runs before 2026-11-25 10:20 counted it wrongly)
                w(f"| probe before the outage | {api['probe_before']} |")
            w(f"| probe during the outage | {api['probe_during']} |")
            w(f"| probe after PostgreSQL was back | {api['probe_after']} |")
            w(f"| slowest probe request | {api['probe_max_s']} s |")
            w(f"| first 200 after PostgreSQL was back | {api['recovered_s']} s |")
            w(f"| non-200 after that first 200 | {api['errors_after_recovery']} |")
            w(f"| result | {'pass' if api['pass'] else '**FAIL**'} |")
        w("")
    fz = results.get("fuzz")
    if fz:
        w = section("fuzz")
        w("## 3. Fuzzing (cargo fuzz, libFuzzer)")
        w("")
        w("Targets in `fuzz/fuzz_targets/`, seed corpus in `fuzz/seeds/` (built from `test-support/fixtures`). "
          "`ingest_decode`: stream entry -> CloudEvent -> `Order` (decode, validation, money formatting, dead letter); "
          "`rest_request`: the real warp route tree with auth off and an unreachable database, fed arbitrary path "
          "segments, query strings and JSON bodies; any 500 counts as a failure.")
        w("")
        w("| target | seconds | executions | exec/s | coverage | corpus | panics | note |")
        w("|---|---|---|---|---|---|---|---|")
        for f in fz:
            if "error" in f:
                w(f"| {f['target']} | - | - | - | - | - | - | {f['error'][:200]} |")
                continue
            w(f"| {f['target']} | {f['seconds']} | {f['executions']} | {f['exec_per_s']} | {f['coverage']} | "
              f"{f['corpus']} (from {f['seeds']} seeds) | {f['panics']} | {f['message'] or ''} |")
        w("")
    st = results.get("schemathesis")
    if st:
        w = section("schemathesis")
        w("## 4. Schema fuzzing (schemathesis)")
        w("")
        if "error" in st:
            w(f"ERROR: {st['error']}")
        else:
            w(f"`st {st['command']}` against the running API with a token holding both scopes, exit status {st['rc']}.")
            w("")
            w(f"Server errors (ST101, any 500): **{st.get('server_errors')}**; response-conformance failures "
              f"(ST101-ST106: server error, undocumented status, content type, headers, schema): "
              f"**{st.get('response_violations')}**.")
            w("")
            if st.get("by_check"):
                w("| check (unique failures) | count |")
                w("|---|---|")
                for k, n in sorted(st["by_check"].items()):
                    w(f"| {k} | {n} |")
                w("")
                w("ST201/ST202 are request-side checks (a schema-invalid request accepted, a schema-valid one "
                  "refused); what remains of them is business rules a schema cannot state (status "
                  "transitions, cancelling a cancelled order, startDate after endDate, blank-after-trim text), "
                  "listed in the log of the run.")
                w("")
            w("```")
            w("\n".join(st["tail"]))
            w("```")
        w("")
    sec = results.get("security")
    if sec:
        w = section("security")
        w("## 5. Security")
        w("")
        if "error" in sec:
            w(f"ERROR: {sec['error']}")
        else:
            w("Every protected route (9 REST + `/graphql`) was called without a token and with 11 kinds of bad "
              "token (alg none, HS256 signed with the RSA public key, expired, not yet valid, wrong issuer, wrong "
              "audience, no exp, signed by another key, tampered payload, garbage, Basic auth); with a token lacking "
              "the route's scope (GraphQL answers 200 with a FORBIDDEN error and a null field); and SQL "
              "metacharacters were put in every string parameter (path, query, body, GraphQL variables): the answer "
              "must be an ordinary 4xx or an empty result within 5 s, free text must be stored literally, and the "
              "table must be whole afterwards.")
            w("")
            w("| group | cases | passed |")
            w("|---|---|---|")
            for g, (n, ok) in sec["groups"].items():
                w(f"| {g} | {n} | {ok} |")
            w(f"| total | {sec['tried']} | {sec['passed']} |")
            if sec["failures"]:
                w("")
                w("Failures:")
                for g, d, det in sec["failures"][:20]:
                    w(f"- {g}: {d}: {det}")
        w("")
    rol = results.get("rolling")
    if rol:
        w = section("rolling")
        render_rolling(w, rol)
    tr = results.get("transport")
    if tr:
        import transport
        w = section("transport")
        transport.render(w, SECTION_TITLES["transport"], tr)
    ob = results.get("outbox")
    if ob:
        import outbox
        w = section("outbox")
        outbox.render(w, SECTION_TITLES["outbox"], ob)
    rep = results.get("replica")
    if rep:
        import replica
        w = section("replica")
        replica.render(w, SECTION_TITLES["replica"], rep)
    ran = results.get("_stages") or [k for k in SECTION_TITLES if k in results]
    sections = {k: v for k, v in sections.items() if k in ran}
    old_runs, old_sections = read_report(path)
    run_id = facts.get("date", "?")
    kept_ids = {rid for k, (rid, _) in old_sections.items() if k not in sections}
    while run_id in kept_ids:  # two runs in one minute: keep them apart
        run_id += "'"
    this_run = {"command": a.command_line or "bench/faults/run.sh",
                "took": f"{results.get('_minutes', round((time.time() - started) / 60, 1))} min", "facts": facts}
    body: list[tuple[str, str, str]] = []  # (key, run id, text)
    for key in SECTION_TITLES:
        if key in sections:
            body.append((key, run_id, "\n".join(sections[key]).rstrip("\n")))
        elif key in old_sections:
            body.append((key, *old_sections[key]))
    runs = {run_id: this_run} if any(r == run_id for _, r, _ in body) or not body else {}
    for _, rid, _ in body:
        if rid not in runs:
            runs[rid] = old_runs.get(rid, {"command": "?", "took": "?", "facts": {}})
    order = sorted(runs, key=lambda r: (r == run_id, r))  # oldest first, this run last
    label = {rid: chr(ord("A") + i) for i, rid in enumerate(order)}
    L = []
    w = L.append
    w("# Reliability campaign")
    w("")
    w("Generated by `bench/faults/run.sh`; do not edit by hand, rerun it. A run of some stages (`--stages`) "
      "rewrites their sections only and keeps the others as the run that wrote them left them; the table "
      "says which run wrote which section.")
    w("")
    w("| run | command | date | took | sections |")
    w("|---|---|---|---|---|")
    for rid in order:
        r = runs[rid]
        secs = ", ".join(SECTION_TITLES[k].split(".")[0] for k, x, _ in body if x == rid) or "-"
        cmd = f"`` {r['command']} ``" if "`" in r["command"] else f"`{r['command']}`"
        w(f"| {label[rid]} | {cmd} | {rid} | {r['took']} | {secs} |")
    w("")
    w("Every server a run used was its own: a private PostgreSQL cluster (initdb into a temp dir), a private "
      "Redis with AOF on, for section 6 a private HAProxy and for section 7 the TLS PostgreSQL and Redis and "
      "the PgBouncer the tests start themselves, all on spare loopback ports; the shared PostgreSQL and "
      "Redis were not touched.")
    w("")
    w(f"<!-- runs: {json.dumps({rid: runs[rid] for rid in order})} -->")
    w("")
    w("## Machine")
    w("")
    keys = list(dict.fromkeys(k for rid in order for k in runs[rid].get("facts", {})))
    w("| fact | " + " | ".join(f"run {label[rid]}" for rid in order) + " |")
    w("|---|" + "---|" * len(order))
    for k in keys:
        w(f"| {k} | " + " | ".join(str(runs[rid].get("facts", {}).get(k, "-")) for rid in order) + " |")
    w("")
    w("The machine is shared (benchmarks may run beside this), so durations are indicative; the counts are not.")
    w("")
    for key, rid, text in body:
        w(f"<!-- section {key} run {rid} -->")
        w(text)
        w(f"<!-- /section {key} -->")
        w("")
    w("## Found and fixed")
    w("")
    w("| finding | fix | regression test |")
    w("|---|---|---|")
    for finding, fix, test in FINDINGS:
        w(f"| {finding} | {fix} | {test} |")
    w("")
    w("Known limits of this campaign: Redis is restarted with SHUTDOWN (AOF flushed), not killed, "
      "so the one second `appendfsync everysec` may lose on a crash is not exercised; a SIGKILL between "
      "a dead letter's XADD and the XACK of its entry can still write that dead letter twice "
      "(documented in order-ingest/src/consumer/acker.rs): run H saw it once, the one doubled of scenario (a).")
    w("")
    w("## How to run")
    w("")
    w("    cargo build --release -p order-api -p order-ingest")
    w("    bench/faults/run.sh                                   # short configuration, about 10 minutes")
    w("    bench/faults/run.sh --events 50000 --rate 1000        # the 50,000-event campaign, about 16 minutes")
    w("    bench/faults/run.sh --stages rolling                  # one stage; the other sections are kept")
    w("    bench/faults/run.sh --stages transport                # the TLS and PgBouncer tests (cargo test)")
    w("    bench/faults/run.sh --stages outbox --outbox-changes 50000   # the outbox under faults, 50,000 changes")
    w("    bench/faults/run.sh --render-from target/faults/results.json   # rewrite this file only")
    w("")
    w("`bench/faults/run.sh --help` lists every flag (scenarios, stages, rates, durations). `--bin-dir target/debug` "
      "runs debug binaries (slower: latencies and throughput are not comparable to release runs).")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    open(tmp, "w").write("\n".join(L) + "\n")
    os.replace(tmp, path)
    log(f"wrote {path}")


def main():
    args = parse()
    started = time.time()
    if args.render_from:
        results = json.load(open(args.render_from))
        ctx = Ctx(args)
        args.command_line = results.get("_command", args.command_line)
        write_report(ctx, results.get("_facts") or machine_facts(ctx), results,
                     args.out or os.path.join(args.root, "docs", "RELIABILITY.md"), started)
        return
    own_workdir = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="order-faults-")
    os.makedirs(args.workdir, exist_ok=True)
    ctx = Ctx(args)
    atexit.register(infra.cleanup)

    def on_signal(signum, _frame):
        log(f"signal {signum}: cleaning up")
        infra.cleanup()
        sys.exit(128 + signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s}")
    for s in stages:
        if s not in STAGES:
            sys.exit(f"unknown stage {s}")
    log(f"work dir {args.workdir}")
    results = {}
    try:
        ctx.pg = PrivatePostgres(args.workdir)
        ctx.redis = PrivateRedis(args.workdir)
        log(f"private PostgreSQL on {ctx.pg.port}, private Redis on {ctx.redis.port}")
        if "ingest" in stages:
            import ingest
            results["ingest"] = []
            for s in scenarios:
                log(f"scenario {s}: {SCENARIOS[s]}")
                try:
                    results["ingest"].append(ingest.run_scenario(ctx, s, SCENARIOS[s]))
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    results["ingest"].append({"scenario": s, "title": SCENARIOS[s], "error": repr(e)})
        need_api = any(s in stages for s in ("api", "security", "schemathesis", "rolling"))
        if need_api:
            import api
            keys = api.Keys(args.workdir)
            logdir = os.path.join(args.workdir, "api")
            os.makedirs(logdir, exist_ok=True)
            orders = None
            try:
                if "api" in stages:
                    results["api"], orders = api.api_under_fault(ctx, keys, logdir)
                else:
                    ctx.pg.create_db("fault_api")
                    import ingest
                    ingest.migrate(ctx, ctx.pg.url("fault_api"), logdir)
                    orders = api.seed_orders(ctx, "fault_api", logdir, args.api_orders)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                if "api" in stages:
                    results["api"] = {"error": repr(e)}
                for s in ("security", "schemathesis", "rolling"):
                    if s in stages:
                        results[s] = {"error": f"seeding the API database failed: {e!r}"}
            if orders and "security" in stages:
                try:
                    results["security"] = api.security(ctx, keys, orders, logdir)
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    results["security"] = {"error": repr(e)}
            if orders and "schemathesis" in stages:
                try:
                    results["schemathesis"] = api.schemathesis(ctx, keys, logdir)
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    results["schemathesis"] = {"error": repr(e)}
            if orders and "rolling" in stages:
                import rolling
                try:
                    results["rolling"] = rolling.run(ctx, keys, orders, logdir)
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    results["rolling"] = {"error": repr(e)}
        if "replica" in stages:
            import api
            import replica
            logdir = os.path.join(args.workdir, "replica")
            os.makedirs(logdir, exist_ok=True)
            try:
                results["replica"] = replica.run(ctx, api.Keys(args.workdir), logdir)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                results["replica"] = {"error": repr(e), "pass": False}
        if "fuzz" in stages:
            import fuzzing
            results["fuzz"] = fuzzing.run(ctx)
        if "transport" in stages:
            import transport
            try:
                results["transport"] = transport.run(ctx)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                results["transport"] = {"error": repr(e), "pass": False}
        if "outbox" in stages:
            import api
            import outbox
            logdir = os.path.join(args.workdir, "outbox")
            os.makedirs(logdir, exist_ok=True)
            try:
                results["outbox"] = outbox.run(ctx, api.Keys(args.workdir), logdir)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                results["outbox"] = {"error": repr(e), "pass": False}
    finally:
        facts = machine_facts(ctx)
        infra.cleanup()
        results["_facts"] = facts
        results["_command"] = args.command_line
        results["_minutes"] = round((time.time() - started) / 60, 1)
        results["_args"] = {k: getattr(args, k) for k in ("events", "rate", "poison_pct", "kills", "outage_s",
                                                           "outbox_changes", "outbox_kills")}
        results["_stages"] = stages
        json.dump(results, open(os.path.join(args.workdir, "results.json"), "w"), indent=2, default=str)
        keep = os.path.join(args.root, "target", "faults")
        os.makedirs(keep, exist_ok=True)
        json.dump(results, open(os.path.join(keep, "results.json"), "w"), indent=2, default=str)
        out = args.out or os.path.join(args.root, "docs", "RELIABILITY.md")
        write_report(ctx, facts, results, out, started)
    failed = [r.get("scenario") for r in results.get("ingest", []) if not r.get("pass")]
    api_ok = results.get("api", {}).get("pass", True)
    sec = results.get("security", {})
    fz = [f for f in results.get("fuzz", []) if f.get("panics") or f.get("error")]
    st_errors = results.get("schemathesis", {}).get("server_errors", 0)
    rolling_ok = results.get("rolling", {}).get("pass", "rolling" not in stages)
    transport_ok = results.get("transport", {}).get("pass", "transport" not in stages)
    outbox_ok = results.get("outbox", {}).get("pass", "outbox" not in stages)
    replica_ok = results.get("replica", {}).get("pass", "replica" not in stages)
    ok = (not failed and api_ok and sec.get("tried", 0) == sec.get("passed", 0) and not fz and not st_errors
          and rolling_ok and transport_ok and outbox_ok and replica_ok)
    if own_workdir and not args.keep and ok:
        shutil.rmtree(args.workdir, ignore_errors=True)
    else:
        log(f"logs kept in {args.workdir}")
    log("ALL PASS" if ok else f"FAILURES: scenarios {failed}, api ok {api_ok}, fuzz {[f['target'] for f in fz]}, "
        f"schemathesis 500s {st_errors}, rolling ok {rolling_ok}, transport ok {transport_ok}, "
        f"outbox ok {outbox_ok}, "
        f"replica ok {replica_ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

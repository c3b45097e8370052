"""TLS and connection poolers: runs the Rust integration tests that prove them and
reports one row per test.

The tests are `tests/tls.rs` and `tests/pgbouncer.rs` of order-store, order-api and
order-ingest, run through cargo one crate at a time (`cargo test --locked --no-fail-fast -p CRATE
--test tls --test pgbouncer -- --test-threads=1`), each build and each run bounded by a timeout. The TLS
tests start their own PostgreSQL (`ssl=on`) and Redis (TLS port only) with certificates they
generate; the PgBouncer tests start Debian's pgbouncer in front of a fresh database of the
server named by TEST_DATABASE_URL, and the ingest one streams through TEST_REDIS_URL: both are
pointed here at the campaign's private servers, so the shared PostgreSQL and Redis are not
touched.

libtest prints `test NAME ... ` (flushed) when a test starts and its result when it ends if it
runs one test at a time; the output is read as it arrives and each piece timestamped, which
gives every test's duration without nightly-only flags.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

import infra
from infra import log

CRATES = ("order-store", "order-api", "order-ingest")
TARGETS = ("tls", "pgbouncer")

# What each test proves, by (crate, test target, test name). A test cargo reports that is not
# listed here gets a row saying so; a listed test cargo does not report is a failure.
PROVES = {
    ("order-store", "tls", "sslmodes_follow_libpq"):
        "libpq's `sslmode` against a PostgreSQL with `ssl=on`: `verify-full` + `sslrootcert` migrates and "
        "serves the pool encrypted; `prefer` (default) and `require` encrypt unchecked; `verify-ca` accepts "
        "a wrong host; `disable` is plain; a wrong CA (verify-full, verify-ca, require + sslrootcert) and a "
        "wrong host under verify-full refused in one line; the platform roots refuse the test CA; a bad "
        "`sslmode` or unreadable `sslrootcert` named",
    ("order-store", "pgbouncer", "migrations_refuse_a_transaction_pooler_and_leave_no_lock_behind"):
        "migrations through PgBouncer (transaction pooling) refused (\"not through a connection pooler\"), "
        "nothing applied, no advisory lock left on a pooled server connection: a direct run then applies "
        "both migrations at once",
    ("order-store", "pgbouncer", "the_pool_without_prepared_statements_works_in_transaction_mode"):
        "1,200 point reads from 12 tasks through PgBouncer (transaction pooling, 2 server connections) with "
        "prepared statements off: no failure; control: the same reads with them on (the default) fail with "
        "`prepared statement ... does not exist`",
    ("order-api", "tls", "serves_over_verify_full_and_refuses_a_wrong_ca_or_host"):
        "the order-api binary with `verify-full` + `sslrootcert`: migrates, `GET /orders/{id}` and "
        "`/health/ready` answer 200, every connection encrypted; `require` serves with a wrong host name; "
        "wrong CA / wrong host refused in one line, exit != 0, no password",
    ("order-api", "tls", "https_jwks_is_verified"):
        "`--jwks-url https://` trusted through `SSL_CERT_FILE`: a real ES256 token verifies (404 for a "
        "missing order, 401 without a token); a JWKS certificate `SSL_CERT_FILE` does not vouch for: no "
        "keys, the same token refused (401), `UnknownIssuer` logged",
    ("order-api", "pgbouncer", "thousands_of_reads_through_pgbouncer_transaction_mode"):
        "order-api with `DB_PREPARED_STATEMENTS=off` behind PgBouncer (transaction pooling, 4 server "
        "connections): 3,200 `GET /orders/{id}` from 16 clients, every one 200 (with named prepared "
        "statements, 2,266 of 3,000 answered 500)",
    ("order-ingest", "tls", "ingests_over_verify_full_and_rediss_across_a_redis_restart"):
        "order-ingest over `verify-full` PostgreSQL and `rediss://` Redis (`SSL_CERT_FILE`): 40 orders "
        "stored, every connection encrypted; Redis restarted, 40 more stored after it reconnects over TLS; "
        "exit 0 on SIGTERM; wrong PostgreSQL CA / host and wrong Redis CA / host each refused in one "
        "line, exit != 0, no password",
    ("order-ingest", "pgbouncer", "ingests_through_pgbouncer_transaction_mode"):
        "order-ingest with `DB_PREPARED_STATEMENTS=off` behind PgBouncer (transaction pooling, 2 server "
        "connections): all 300 published orders stored, exit 0 on SIGTERM",
}


def _cmd_first_line(*args) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return "?"


def versions() -> dict:
    """Versions of the tools the tests use (also in the machine facts)."""
    pgb = "/usr/sbin/pgbouncer"
    return {
        "pgbouncer": _cmd_first_line(pgb, "--version") if os.path.exists(pgb) else "missing",
        "openssl": _cmd_first_line("openssl", "version"),
        "redis": _cmd_first_line("redis-server", "--version"),
    }


def locked_versions(root: str, names=("rustls", "tokio-rustls", "tokio-postgres", "redis")) -> dict:
    """Versions of the Rust TLS stack from Cargo.lock."""
    found: dict[str, list[str]] = {}
    try:
        text = open(os.path.join(root, "Cargo.lock")).read()
    except OSError:
        return {}
    for m in re.finditer(r'^name = "([^"]+)"\nversion = "([^"]+)"', text, re.M):
        if m.group(1) in names:
            found.setdefault(m.group(1), []).append(m.group(2))
    return {k: ", ".join(v) for k, v in found.items()}


def _run_streamed(args, cwd, env, timeout, log_path):
    """Runs `args` with stdout+stderr on one pipe read as it arrives. Returns (rc or None on
    timeout, output bytes, [(monotonic time, end offset)] of each piece read, seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    infra._PROCS.append(proc)  # the driver's cleanup stops it (its process group) on any exit
    pieces: list[bytes] = []
    marks: list[tuple[float, int]] = []

    def reader():
        fd = proc.stdout.fileno()
        size = 0
        while True:
            try:
                b = os.read(fd, 65536)
            except OSError:
                return
            if not b:
                return
            pieces.append(b)
            size += len(b)
            marks.append((time.monotonic(), size))

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    rc = None
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"timeout after {timeout}s: {' '.join(args)}")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue
    # A server a test left behind may hold the pipe open: do not wait for its EOF for long.
    th.join(10)
    out = b"".join(pieces)
    with open(log_path, "ab") as f:
        f.write(f"$ {' '.join(args)}\n".encode() + out + f"\n[exit {rc}]\n".encode())
    return rc, out, marks, round(time.monotonic() - started, 1)


def _time_at(marks, offset: int) -> float | None:
    """When the byte at `offset` had arrived."""
    for t, end in marks:
        if end > offset:
            return t
    return marks[-1][0] if marks else None


_RUNNING = re.compile(rb"Running tests/(\w+)\.rs \(")
_START = re.compile(rb"(?m)^test (\S+) \.\.\. ")
_RESULT = re.compile(rb"(ok|FAILED|ignored)(?:, [^\n]*)?\n")
_FAILURE_LIST = re.compile(rb"(?ms)^failures:\n((?:    \S+\n)+)")
_FAILURE_BLOCK = re.compile(rb"(?ms)^---- (\S+) stdout ----\n(.*?)(?=^---- |^failures:|\Z)")


def parse(out: bytes, marks) -> list[dict]:
    """Each test libtest reported: target, name, result, seconds, message (of a failure)."""
    targets = [(m.start(), m.group(1).decode()) for m in _RUNNING.finditer(out)]
    starts = list(_START.finditer(out))
    tests = []
    for i, m in enumerate(starts):
        name = m.group(1).decode()
        target = next((t for pos, t in reversed(targets) if pos < m.start()), "?")
        limit = starts[i + 1].start() if i + 1 < len(starts) else len(out)
        r = _RESULT.match(out, m.end()) or _RESULT.search(out, m.end(), limit)
        result = r.group(1).decode() if r else "no result"
        t0 = _time_at(marks, m.end() - 1)
        t1 = _time_at(marks, r.start()) if r else None
        tests.append({"target": target, "name": name, "result": result,
                      "seconds": round(t1 - t0, 1) if t0 is not None and t1 is not None else None,
                      "message": ""})
    failed = set()
    for m in _FAILURE_LIST.finditer(out):
        failed.update(x.strip().decode() for x in m.group(1).splitlines() if x.strip())
    messages = {}
    for m in _FAILURE_BLOCK.finditer(out):
        text = m.group(2).decode(errors="replace")
        p = re.search(r"panicked at ([^\n]*)\n(.*?)(?:\nnote: |\nstack backtrace|\n\n|\Z)", text, re.S)
        messages[m.group(1).decode()] = (p.group(2).strip() if p else text.strip())[:400]
    for t in tests:
        if t["name"] in failed:
            t["result"] = "FAILED"
        if t["result"] != "ok":
            t["message"] = messages.get(t["name"], "")
    return tests


def run(ctx) -> dict:
    args = ctx.args
    env = dict(os.environ,
               TEST_DATABASE_URL=ctx.pg.url("postgres"),
               TEST_REDIS_URL=ctx.redis.url,
               CARGO_TERM_COLOR="never")
    # order-store's sslmodes test checks that the platform roots alone refuse the test CA only
    # when SSL_CERT_FILE is unset in its process; the binaries' tests set it themselves.
    ssl_cert_file = env.pop("SSL_CERT_FILE", None)
    log_path = os.path.join(ctx.workdir, "transport.log")
    selection = [a for t in TARGETS for a in ("--test", t)]
    started = time.time()
    crates, tests = [], []
    for crate in CRATES:
        # --no-fail-fast: a failing test binary must not keep the crate's other one from running.
        base = ["cargo", "test", "--locked", "--no-fail-fast", "-p", crate, *selection]
        log(f"transport: building the {crate} tests (cargo may wait for the build directory lock)")
        brc, bout, _, bsec = _run_streamed(base + ["--no-run"], ctx.root, env, args.transport_build_timeout,
                                           log_path)
        c = {"crate": crate, "build_rc": brc, "build_s": bsec, "command": " ".join(base)
             + " -- --test-threads=1"}
        crates.append(c)
        expected = [k for k in PROVES if k[0] == crate]
        if brc != 0:
            tail = bout.decode(errors="replace").strip().splitlines()[-12:]
            c["error"] = ("build timed out" if brc is None else f"build failed (exit {brc})") + ": " \
                + " / ".join(tail)[-600:]
            log(f"transport: {c['error']}")
            tests += [{"crate": crate, "target": t, "name": n, "result": "not built", "seconds": None,
                       "message": c["error"]} for _, t, n in expected]
            continue
        log(f"transport: running {' '.join(base)} -- --test-threads=1")
        rc, out, marks, sec = _run_streamed(base + ["--", "--test-threads=1"], ctx.root, env,
                                            args.transport_timeout, log_path)
        c.update(run_rc=rc, run_s=sec, timed_out=rc is None)
        found = parse(out, marks)
        summaries = re.findall(rb"test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored", out)
        c["summaries"] = [" ".join(x.decode() for x in s) for s in summaries]
        for t in found:
            t["crate"] = crate
            if rc is None and t["result"] == "no result":
                t["result"] = "TIMEOUT"
                t["message"] = f"still running when the {args.transport_timeout} s bound was hit"
        seen = {(crate, t["target"], t["name"]) for t in found}
        for k in expected:
            if k not in seen:
                found.append({"crate": crate, "target": k[1], "name": k[2], "seconds": None,
                              "result": "TIMEOUT" if rc is None else "not run",
                              "message": "not reported by cargo" + (" (timed out)" if rc is None else "")})
        if rc not in (0, None) and not any(t["result"] != "ok" for t in found):
            c["error"] = f"cargo test exited {rc} with every test ok: " \
                + " / ".join(out.decode(errors="replace").strip().splitlines()[-6:])[-600:]
        tests += found
        for t in found:
            log(f"transport: {crate} {t['target']}::{t['name']}: {t['result']} in {t['seconds']} s")
    for t in tests:
        t["proves"] = PROVES.get((t["crate"], t["target"], t["name"]), "")
    passed = sum(1 for t in tests if t["result"] == "ok")
    return {
        "crates": crates, "tests": tests, "passed": passed, "total": len(tests),
        "pass": bool(tests) and passed == len(tests) and not any(c.get("error") for c in crates),
        "versions": versions(), "locked": locked_versions(ctx.root),
        "ssl_cert_file_unset": ssl_cert_file,
        "timeout_s": args.transport_timeout, "build_timeout_s": args.transport_build_timeout,
        "minutes": round((time.time() - started) / 60, 1),
    }


def render(w, title: str, r: dict) -> None:
    w(f"## {title}")
    w("")
    if "tests" not in r:
        w(f"ERROR: {r.get('error')}")
        w("")
        return
    locked = r.get("locked", {})
    v = r.get("versions", {})
    w("The Rust integration tests of TLS (`tests/tls.rs`) and of PgBouncer in transaction pooling "
      "(`tests/pgbouncer.rs`) in order-store, order-api and order-ingest, run through cargo one crate after "
      f"the other (`cargo test --locked --no-fail-fast -p CRATE --test tls --test pgbouncer -- --test-threads=1`, "
      f"debug profile; each build bounded by {r['build_timeout_s']} s, each run by {r['timeout_s']} s). The TLS "
      "tests start their own PostgreSQL (`initdb` + `pg_ctl`, `ssl=on`) and Redis (`--tls-port` only) on "
      "spare ports, with a CA, a `localhost` server certificate and a second, untrusted CA they make with "
      "`openssl`, and a local https JWKS server; the PgBouncer tests start Debian's pgbouncer (transaction "
      "pooling) on a spare port in front of a fresh database of the campaign's private PostgreSQL "
      "(`TEST_DATABASE_URL`), and the ingest one streams through the campaign's private Redis "
      "(`TEST_REDIS_URL`). Clients use rustls"
      + (f" {locked['rustls']}" if locked.get("rustls") else "")
      + (f" (tokio-rustls {locked['tokio-rustls']})" if locked.get("tokio-rustls") else "")
      + f"; servers: {v.get('pgbouncer', '?')}, {v.get('openssl', '?')}, {v.get('redis', '?')}. "
      + ("`SSL_CERT_FILE` was unset for cargo (the environment had it) so that order-store's test also checks "
         "the platform roots alone; the binaries' tests set it themselves. " if r.get("ssl_cert_file_unset") else "")
      + "Durations are read from libtest's output as it streamed (one test at a time).")
    w("")
    w("| crate | test | what it proves | duration | result |")
    w("|---|---|---|---|---|")
    for t in r["tests"]:
        res = "pass" if t["result"] == "ok" else f"**{t['result']}**"
        dur = "-" if t.get("seconds") is None else f"{t['seconds']} s"
        proves = t.get("proves") or "(no description in bench/faults/transport.py)"
        w(f"| {t['crate']} | `{t['target']}::{t['name']}` | {proves} | {dur} | {res} |")
    w("")
    builds = "; ".join(
        f"{c['crate']} {c['build_s']} s + {c['run_s'] if 'run_s' in c else '-'} s" for c in r["crates"])
    w(f"{r['passed']} of {r['total']} tests passed; result: {'pass' if r['pass'] else '**FAIL**'}. "
      f"Wall time of cargo's build (`--no-run`) + test run per crate, waits for cargo's lock and "
      f"rebuilds included: {builds}.")
    w("")
    errors = [c for c in r["crates"] if c.get("error")]
    fails = [t for t in r["tests"] if t["result"] != "ok" and t.get("message")]
    if errors or fails:
        w("Failures:")
        w("")
        for c in errors:
            err = c["error"].replace("`", "'")
            w(f"- {c['crate']}: `{err}`")
        for t in fails:
            msg = " ".join(t["message"].split()).replace("`", "'")
            w(f"- {t['crate']} `{t['target']}::{t['name']}`: `{msg[:400]}`")
        w("")

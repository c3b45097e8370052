"""Rolling restart behind a load balancer: two order-api processes behind HAProxy,
constant keep-alive load through HAProxy, each process in turn sent SIGTERM, waited for (it must
exit 0 on its own within its grace period), started again on the same port and waited for until
HAProxy sees it healthy. Pass: zero non-2xx answers and zero connection errors at the client,
every SIGTERM'd process exited 0.

HAProxy (Debian's package, installed here with apt-get when missing) runs in the foreground from
a config written into the work dir; it is registered with infra.spawn, so the driver's cleanup
stops it (and the order-api processes) on any exit.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time

import api as apimod
from infra import free_port, log, spawn, stop, wait_port

GRACE_S = 30.0  # Kubernetes' default terminationGracePeriodSeconds
BACKENDS = ("api1", "api2")

# The HAProxy settings of the stage, rendered into haproxy.cfg and quoted in the report.
# retries/redispatch: only a failed *connection* to a server is retried (retry-on conn-failure,
# HAProxy's default), on another server (redispatch): the request never reached a server, so this
# is safe for any method and is what every production load balancer does. Empty responses,
# resets after the request was sent, response timeouts and 5xx are NOT retried: a backend that
# drops a request mid-flight shows up as a 502/504 at the client, which is what this stage is
# there to catch. The retries HAProxy did make are read from its statistics and reported.
SETTINGS = {
    "mode": "http, keep-alive on both sides (option http-keep-alive), http-reuse safe",
    "health check": "option httpchk GET /health/ready; http-check expect status 200; "
                    "inter 500ms fastinter 250ms downinter 500ms fall 1 rise 2; timeout check 2s",
    "balance": "roundrobin",
    "retries": "retries 3, retry-on conn-failure (only), option redispatch 1",
    "timeouts": "connect 1s, client 30s, server 10s, http-request 10s, http-keep-alive 10s, queue 5s",
}

HAPROXY_CFG = """\
global
    maxconn 2000
    stats socket {sock} mode 600 level admin
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    option http-keep-alive
    timeout connect 1s
    timeout client 30s
    timeout server 10s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 5s
    timeout check 2s
    retries 3
    retry-on conn-failure
    option redispatch 1

frontend orders
    bind 127.0.0.1:{port}
    default_backend order_api

backend order_api
    balance roundrobin
    option httpchk GET /health/ready
    http-check expect status 200
    http-reuse safe
    default-server inter 500ms fastinter 250ms downinter 500ms fall 1 rise 2
{servers}
"""


def ensure_haproxy() -> str:
    """Installs Debian's haproxy when it is missing; returns `haproxy -v`'s first line."""
    if not shutil.which("haproxy"):
        if os.geteuid() != 0:
            raise RuntimeError("haproxy is missing and this is not root: apt-get install -y haproxy")
        log("haproxy missing: apt-get update && apt-get install -y haproxy")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "haproxy"]):
            out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
            if out.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {out.stdout.decode(errors='replace')[-1500:]}")
    return haproxy_version()


def haproxy_version() -> str:
    if not shutil.which("haproxy"):
        return "missing"
    out = subprocess.run(["haproxy", "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
    return out.stdout.decode(errors="replace").strip().splitlines()[0] if out.stdout else "?"


class HAProxy:
    def __init__(self, workdir, backends: dict[str, int]):
        self.port = free_port()
        self.sock = os.path.join(workdir, "haproxy.sock")
        self.cfg = os.path.join(workdir, "haproxy.cfg")
        servers = "\n".join(f"    server {name} 127.0.0.1:{p} check" for name, p in backends.items())
        open(self.cfg, "w").write(HAPROXY_CFG.format(sock=self.sock, port=self.port, servers=servers))
        check = subprocess.run(["haproxy", "-c", "-f", self.cfg], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c: {check.stdout.decode(errors='replace')[-1500:]}")
        self.proc = spawn(["haproxy", "-db", "-f", self.cfg], os.path.join(workdir, "haproxy.log"))
        if not wait_port(self.port, 20):
            raise RuntimeError("haproxy did not start (see haproxy.log)")

    def command(self, cmd: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(self.sock)
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def stats(self) -> dict[str, dict]:
        """`show stat` as {svname: row} for the backend (and its BACKEND/FRONTEND rows)."""
        text = self.command("show stat")
        lines = [x for x in text.splitlines() if x.strip()]
        if not lines or not lines[0].startswith("# "):
            return {}
        head = lines[0][2:].split(",")
        rows = {}
        for line in lines[1:]:
            row = dict(zip(head, line.split(",")))
            if row.get("pxname") in ("order_api", "orders"):
                rows[f"{row['pxname']}/{row['svname']}"] = row
        return rows

    def states(self) -> dict[str, str]:
        try:
            return {k.split("/")[1]: v.get("status", "?") for k, v in self.stats().items()
                    if k.startswith("order_api/") and k.split("/")[1] in BACKENDS}
        except Exception:  # noqa: BLE001 - HAProxy gone or busy: no reading this time
            return {}

    def stop(self):
        stop(self.proc, timeout=10)


class Monitor(threading.Thread):
    """Polls HAProxy's server states every 50 ms and records every change with its time."""

    def __init__(self, lb: HAProxy, t0: float):
        super().__init__(daemon=True)
        self.lb, self.t0 = lb, t0
        self.current: dict[str, str] = {}
        self.changes: list[tuple[float, str, str]] = []
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        while not self.halt.is_set():
            st = self.lb.states()
            now = time.monotonic()
            with self.lock:
                for name, status in st.items():
                    if self.current.get(name) != status:
                        self.changes.append((now, name, status))
                        self.current[name] = status
            self.halt.wait(0.05)

    def status(self, name) -> str:
        with self.lock:
            return self.current.get(name, "?")

    def first(self, name, status_prefix, after) -> float | None:
        with self.lock:
            return next((t for t, n, s in self.changes if n == name and t >= after and s.startswith(status_prefix)), None)

    def wait_for_after(self, name, status, after, timeout) -> float | None:
        """When `name` first reached exactly `status` after `after` (waiting up to `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                t = next((t for t, n, s in self.changes if n == name and t >= after and s == status), None)
            if t is not None:
                return t
            time.sleep(0.05)
        return None

    def wait_for(self, name, status, timeout) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status(name) == status:
                return time.monotonic()
            time.sleep(0.05)
        return None


def classify(e: BaseException) -> str:
    if isinstance(e, http.client.RemoteDisconnected):
        return "remote disconnected"
    if isinstance(e, ConnectionResetError):
        return "connection reset"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, BrokenPipeError):
        return "broken pipe"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    return type(e).__name__


class Load:
    """`workers` threads, each with one persistent keep-alive connection to HAProxy, doing
    `GET /orders/{id}` at `rate`/s in total. Every answer is counted by status, every exception
    by kind; bounded by `max_seconds` and `max_requests`."""

    def __init__(self, port, token, ids, workers, rate, max_seconds, max_requests=2_000_000, timeout=5.0):
        self.port, self.token, self.ids = port, token, ids
        self.workers, self.rate, self.timeout = workers, rate, timeout
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.samples: list[dict] = []  # the first failures, for the report and diagnosis
        self.latencies: list[float] = []
        self.requests = 0
        self.reconnects = 0
        self.lb_closed = 0
        self.threads: list[threading.Thread] = []
        self.t0 = None

    def start(self):
        self.t0 = time.monotonic()
        for i in range(self.workers):
            th = threading.Thread(target=self._worker, args=(i,), daemon=True)
            th.start()
            self.threads.append(th)

    def _note_failure(self, kind, detail):
        if len(self.samples) < 40:
            self.samples.append({"t": round(time.monotonic() - self.t0, 3), "kind": kind, "detail": detail[:200]})

    def _worker(self, i):
        rnd = random.Random(i)
        interval = self.workers / self.rate
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        conn = None
        next_t = time.monotonic() + rnd.random() * interval
        deadline = self.t0 + self.max_seconds
        while not self.halt.is_set() and time.monotonic() < deadline:
            with self.lock:
                if self.requests >= self.max_requests:
                    break
                self.requests += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                with self.lock:
                    self.reconnects += 1
            oid = self.ids[rnd.randrange(len(self.ids))]
            t = time.monotonic()
            try:
                conn.request("GET", f"/orders/{oid}", headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                took = time.monotonic() - t
                key = str(resp.status)
                with self.lock:
                    self.statuses[key] = self.statuses.get(key, 0) + 1
                    self.latencies.append(took)
                    if not 200 <= resp.status < 300:
                        self._note_failure(f"status {resp.status}", body.decode(errors="replace"))
                if resp.will_close:
                    with self.lock:
                        self.lb_closed += 1
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every exception is a counted outcome
                kind = classify(e)
                with self.lock:
                    self.errors[kind] = self.errors.get(kind, 0) + 1
                    self._note_failure(kind, repr(e))
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
            next_t += interval
            now = time.monotonic()
            if next_t < now - 1.0:  # fell far behind (a slow phase): do not burst to catch up
                next_t = now
            self.halt.wait(max(0.0, next_t - now))
        if conn is not None:
            conn.close()

    def stop(self):
        self.halt.set()
        for th in self.threads:
            th.join(self.timeout + 5)

    def summary(self) -> dict:
        with self.lock:
            lat = sorted(self.latencies)
            pct = lambda p: round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000, 1) if lat else None  # noqa: E731
            done = sum(self.statuses.values()) + sum(self.errors.values())
            return {
                "requests": done, "statuses": dict(sorted(self.statuses.items())),
                "errors": dict(sorted(self.errors.items())),
                "non_2xx": sum(n for s, n in self.statuses.items() if not s.startswith("2")),
                "connection_errors": sum(self.errors.values()),
                "connections_opened": self.reconnects, "closed_by_lb": self.lb_closed,
                "latency_ms": {"p50": pct(50), "p99": pct(99), "max": round(lat[-1] * 1000, 1) if lat else None},
                "seconds": round(time.monotonic() - self.t0, 1), "failures": list(self.samples),
            }


class ApiProc:
    """One order-api process on a fixed port, restartable on the same port."""

    def __init__(self, ctx, name, port, db_url, keys, logdir, delay_ms, flag_supported):
        self.ctx, self.name, self.port, self.db_url = ctx, name, port, db_url
        self.keys, self.logdir, self.delay_ms = keys, logdir, delay_ms
        self.flag_supported = flag_supported
        self.proc = None
        self.starts = 0

    def start(self, timeout=60.0):
        env = dict(os.environ, DATABASE_URL=self.db_url, RUST_LOG="warn,order_api=info", DB_CONNECT_TIMEOUT_MS="2000",
                   ORDER_DB_QUERY_TIMEOUT_MS="5000", DB_POOL_SIZE="8",
                   ORDER_SHUTDOWN_DELAY_MS=str(self.delay_ms))
        args = [self.ctx.bin("order-api"), "--listen", f"127.0.0.1:{self.port}",
                "--jwt-public-key-file", self.keys.public, "--jwt-issuers", apimod.ISSUER,
                "--jwt-audience", apimod.AUDIENCE]
        if self.flag_supported:
            args += ["--shutdown-delay-ms", str(self.delay_ms)]
        deadline = time.monotonic() + timeout
        while True:
            self.proc = spawn(args, os.path.join(self.logdir, f"order-api-{self.name}.log"), env=env)
            self.starts += 1
            while time.monotonic() < deadline and self.proc.poll() is None:
                if wait_port(self.port, 0.5):
                    return
            if self.proc.poll() is None or time.monotonic() >= deadline:
                raise RuntimeError(f"order-api {self.name} did not listen on {self.port} in {timeout} s")
            log(f"order-api {self.name} exited {self.proc.returncode} at start (port busy?); retrying")
            time.sleep(0.5)

    def terminate(self, grace) -> tuple[int | None, float, bool]:
        """SIGTERM to the process (as Kubernetes sends it), then wait up to `grace` seconds.
        Returns (exit code, seconds to exit, exited on its own)."""
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(grace)
            return rc, time.monotonic() - t, True
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            rc = self.proc.wait(10)
            return rc, time.monotonic() - t, False

    def stop(self):
        stop(self.proc, timeout=GRACE_S)


def binary_knows_delay(ctx) -> bool:
    out = subprocess.run([ctx.bin("order-api"), "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return b"--shutdown-delay-ms" in out.stdout


def run(ctx, keys, orders, logdir) -> dict:
    a = ctx.args
    version = ensure_haproxy()
    rdir = os.path.join(logdir, "rolling")
    os.makedirs(rdir, exist_ok=True)
    db_url = ctx.pg.url("fault_api")
    flag = binary_knows_delay(ctx)
    if not flag:
        log("order-api --help does not list --shutdown-delay-ms: this binary predates the graceful "
            "drain; ORDER_SHUTDOWN_DELAY_MS is set anyway (ignored by it)")
    procs = {name: ApiProc(ctx, name, free_port(), db_url, keys, rdir, a.rolling_delay_ms, flag) for name in BACKENDS}
    for p in procs.values():
        p.start()
    lb = HAProxy(rdir, {n: p.port for n, p in procs.items()})
    t0 = time.monotonic()
    mon = Monitor(lb, t0)
    mon.start()
    result = {"haproxy": version, "settings": SETTINGS, "cycles": a.rolling_cycles,
              "delay_ms": a.rolling_delay_ms, "binary_knows_delay_flag": flag, "grace_s": GRACE_S,
              "workers": a.rolling_workers, "rate": a.rolling_rate, "settle_s": a.rolling_settle_s,
              "orders": len(orders), "bin_dir": os.path.relpath(a.bin_dir, ctx.root), "rolls": []}
    load = None
    try:
        for name in BACKENDS:
            if mon.wait_for(name, "UP", 30) is None:
                raise RuntimeError(f"HAProxy never saw {name} UP (status {mon.status(name)})")
        token = keys.rs256(apimod.claims(scope="order:read"))
        ids = [o["id"] for o in orders]
        # One request through HAProxy before the load: the token and the route work.
        c = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        c.request("GET", f"/orders/{ids[0]}", headers={"Authorization": f"Bearer {token}"})
        r = c.getresponse()
        body = r.read()
        c.close()
        if r.status != 200:
            raise RuntimeError(f"warm-up request through HAProxy answered {r.status}: {body[:200]!r}")
        budget = a.rolling_cycles * len(BACKENDS) * (GRACE_S + 60 + a.rolling_settle_s) + 60
        load = Load(lb.port, token, ids, a.rolling_workers, a.rolling_rate, budget)
        load.start()
        time.sleep(a.rolling_settle_s)
        for cycle in range(1, a.rolling_cycles + 1):
            for name in BACKENDS:
                p = procs[name]
                other = next(n for n in BACKENDS if n != name)
                t_term = time.monotonic()
                log(f"cycle {cycle}: SIGTERM {name} (pid {p.proc.pid})")
                rc, took, own = p.terminate(GRACE_S)
                t_exit = time.monotonic()
                t_down = mon.first(name, "DOWN", t_term)
                roll = {"cycle": cycle, "process": name, "exit_code": rc, "exit_s": round(took, 2),
                        "exited_on_its_own": own,
                        "lb_down_after_s": None if t_down is None else round(t_down - t_term, 2),
                        "lb_down_before_exit": t_down is not None and t_down <= t_exit,
                        "other_status_at_term": mon.status(other)}
                p.start()
                t_started = time.monotonic()
                roll["restart_listening_s"] = round(t_started - t_exit, 2)
                if t_down is None:
                    t_down = mon.first(name, "DOWN", t_term)
                    if t_down is not None:  # noticed only after the process had exited
                        roll["lb_down_after_s"] = round(t_down - t_term, 2)
                if t_down is None:
                    # HAProxy never noticed the process was gone (it exited and came back between
                    # two checks): wait for two more checks of the new process instead.
                    time.sleep(1.5)
                    t_up = time.monotonic() if mon.status(name) == "UP" else mon.wait_for(name, "UP", 60)
                    roll["lb_never_down"] = True
                else:
                    t_up = mon.wait_for_after(name, "UP", t_down, 60)
                roll["lb_up_after_start_s"] = None if t_up is None else round(max(0.0, t_up - t_started), 2)
                if t_up is None:
                    roll["error"] = f"HAProxy did not see {name} UP within 60 s"
                result["rolls"].append(roll)
                log(f"cycle {cycle} {name}: exit {rc} after {took:.2f} s (own: {own}), LB down after "
                    f"{roll['lb_down_after_s']} s, up {roll['lb_up_after_start_s']} s after start; "
                    f"client so far {load.summary()['statuses']} {load.summary()['errors']}")
                if t_up is None:
                    raise RuntimeError(roll["error"])
                time.sleep(a.rolling_settle_s)
    except Exception as e:  # noqa: BLE001
        result["error"] = repr(e)
    finally:
        if load is not None:
            load.stop()
            result["client"] = load.summary()
        mon.halt.set()
        mon.join(2)
        try:
            st = lb.stats()
            result["lb_stats"] = {k: {f: v.get(f) for f in ("status", "stot", "econ", "eresp", "wretr", "wredis",
                                                            "hrsp_2xx", "hrsp_5xx", "chkfail", "chkdown", "downtime")}
                                  for k, v in st.items()}
        except OSError as e:
            result["lb_stats"] = {"error": repr(e)}
        result["lb_changes"] = [(round(t - t0, 2), n, s) for t, n, s in mon.changes]
        lb.stop()
        for p in procs.values():
            p.stop()
    cl = result.get("client", {})
    rolls = result["rolls"]
    result["exit_codes"] = [r["exit_code"] for r in rolls]
    result["pass"] = ("error" not in result and len(rolls) == a.rolling_cycles * len(BACKENDS)
                      and cl.get("requests", 0) > 0 and cl.get("non_2xx", 1) == 0
                      and cl.get("connection_errors", 1) == 0
                      and all(r["exit_code"] == 0 and r["exited_on_its_own"] for r in rolls))
    log(f"rolling restart: {'PASS' if result['pass'] else 'FAIL'} "
        + json.dumps({k: v for k, v in result.items() if k not in ('lb_changes', 'settings')}, default=str)[:3000])
    return result

"""The API under faults (wrk + a probe while PostgreSQL restarts), the security cases, and
schemathesis. Tokens are made with the openssl CLI (RS256) and hmac (the forged HS256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import redis

import events as ev
import ingest
from infra import free_port, log, spawn, stop, wait_port

ISSUER = "https://user-service.faults.local"
AUDIENCE = "reactive-test-api"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keys:
    def __init__(self, workdir):
        self.private = os.path.join(workdir, "jwt-private.pem")
        self.public = os.path.join(workdir, "jwt-public.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                        "-out", self.private], check=True, capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", self.private, "-pubout", "-out", self.public],
                       check=True, capture_output=True)
        other = os.path.join(workdir, "jwt-other.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                        "-out", other], check=True, capture_output=True)
        self.other_private = other

    def rs256(self, claims: dict, header: dict | None = None, key: str | None = None) -> str:
        head = {"alg": "RS256", "typ": "JWT", **(header or {})}
        signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key or self.private],
                             input=signing_input.encode(), check=True, capture_output=True).stdout
        return f"{signing_input}.{b64(sig)}"

    def hs256_with_public_key(self, claims: dict) -> str:
        head = {"alg": "HS256", "typ": "JWT"}
        signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
        secret = open(self.public, "rb").read()
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(sig)}"

    @staticmethod
    def none(claims: dict) -> str:
        return f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}."


def claims(scope="order:read order:write", **over):
    now = int(time.time())
    c = {"sub": "faults", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 3600, "scope": scope}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def request(base, method, path, token=None, body=None, timeout=10.0, raw_auth=None):
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if raw_auth is not None:
        headers["Authorization"] = raw_auth
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    t = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), time.monotonic() - t
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.monotonic() - t
    except (TimeoutError, OSError) as e:
        return ("timeout" if "timed out" in str(e) else "error"), str(e).encode(), time.monotonic() - t


class Api:
    def __init__(self, ctx, db_url, keys, logdir):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, DATABASE_URL=db_url, RUST_LOG="warn", DB_CONNECT_TIMEOUT_MS="2000",
                   ORDER_DB_QUERY_TIMEOUT_MS="5000", DB_POOL_SIZE="16")
        self.proc = spawn([ctx.bin("order-api"), "--listen", f"127.0.0.1:{self.port}",
                           "--jwt-public-key-file", keys.public, "--jwt-issuers", ISSUER,
                           "--jwt-audience", AUDIENCE], os.path.join(logdir, "order-api.log"), env=env)
        if not wait_port(self.port, 30):
            raise RuntimeError("order-api did not start (see order-api.log)")

    def stop(self):
        stop(self.proc)


def seed_orders(ctx, db, logdir, n):
    """Ingests `n` valid orders through a worker; returns the published orders."""
    pg, rd = ctx.pg, ctx.redis
    key = f"faults:api-seed:{os.getpid()}"
    db_url = pg.url(db)
    plan = ev.plan(n, 0.0, ctx.args.seed, "API")
    orders = [p for p in plan.prelude + plan.events if p.kind == "valid"]
    redis.Redis.from_url(rd.url).xgroup_create(key, ingest.GROUP, id="0", mkstream=True)
    workers = ingest.Workers(ctx, rd.url, db_url, key, logdir, 3000)
    workers.start("seed")
    pub = ingest.Publisher(rd.url, key, orders, 5000, int(time.time() * 1000))
    pub.run()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if int(pg.psql(db, "SELECT count(*) FROM orders")) >= len(orders):
            break
        time.sleep(0.3)
    workers.stop_all()
    redis.Redis.from_url(rd.url).delete(key, f"{key}:dlq")
    return [p.order for p in orders]


WRK_LUA = r"""
-- Mixed reads and writes; counts every status per thread and prints them as JSON at the end.
local ids, stores, customers = {}, {}, {}
local token = os.getenv("FAULTS_TOKEN")
for line in io.lines(os.getenv("FAULTS_IDS")) do
  local id, store, cust = line:match("([^,]*),([^,]*),([^,]*)")
  ids[#ids + 1] = id; stores[#stores + 1] = store
  if cust ~= "" then customers[#customers + 1] = cust end
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function request()
  local r = math.random(100)
  local h = { ["Authorization"] = "Bearer " .. token }
  if r <= 55 then
    return wrk.format("GET", "/orders/" .. ids[math.random(#ids)], h)
  elseif r <= 70 then
    return wrk.format("GET", "/orders?storeNumber=" .. stores[math.random(#stores)] .. "&size=10", h)
  elseif r <= 80 then
    return wrk.format("GET", "/orders/customer/" .. customers[math.random(#customers)] .. "?limit=5", h)
  else
    h["Content-Type"] = "application/json"
    return wrk.format("POST", "/orders/" .. ids[math.random(#ids)] .. "/notes", h, '{"note":"wrk"}')
  end
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do total[k] = (total[k] or 0) + v end
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


def api_under_fault(ctx, keys, logdir) -> dict:
    pg = ctx.pg
    db = "fault_api"
    pg.create_db(db)
    db_url = pg.url(db)
    ingest.migrate(ctx, db_url, logdir)
    orders = seed_orders(ctx, db, logdir, ctx.args.api_orders)
    ids_file = os.path.join(logdir, "ids.csv")
    with open(ids_file, "w") as f:
        for o in orders:
            f.write(f"{o['id']},{o['storeNumber']},{o['customerId'] or ''}\n")
    lua = os.path.join(logdir, "mixed.lua")
    open(lua, "w").write(WRK_LUA)
    api = Api(ctx, db_url, keys, logdir)
    token = keys.rs256(claims())
    seconds = ctx.args.api_seconds
    probe_log = []
    stop_probe = threading.Event()
    probe_id = orders[0]["id"]

    def probe():
        while not stop_probe.is_set():
            t = time.monotonic()
            status, _, took = request(api.base, "GET", f"/orders/{probe_id}", token, timeout=5)
            probe_log.append((t, status, took))
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))

    wrk_out = os.path.join(logdir, "wrk.out")
    env = dict(os.environ, FAULTS_TOKEN=token, FAULTS_IDS=ids_file)
    wrk = subprocess.Popen(["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "5s", "-s", lua, api.base],
                           stdout=open(wrk_out, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    th = threading.Thread(target=probe, daemon=True)
    th.start()
    t0 = time.monotonic()
    time.sleep(seconds / 3)
    t_down = time.monotonic()
    pg.stop("fast")
    time.sleep(ctx.args.api_outage_s)
    pg.start()
    t_up = time.monotonic()
    try:
        wrk.wait(seconds + 60)
    except subprocess.TimeoutExpired:
        stop(wrk)
    stop_probe.set()
    th.join(10)
    api_alive = api.proc.poll() is None
    api.stop()
    out = open(wrk_out).read()

    def grab(tag):
        m = re.search(tag + r" (\{.*\})", out)
        return json.loads(m.group(1)) if m else {}

    statuses = grab("WRK_STATUSES")
    errors = grab("WRK_ERRORS")
    latency = grab("WRK_LATENCY")
    total_req = re.search(r"(\d+) requests in", out)
    during = [s for t, s, _ in probe_log if t_down <= t < t_up]
    before = [s for t, s, _ in probe_log if t < t_down]
    after = [(t, s) for t, s, _ in probe_log if t >= t_up]
    first_ok = next((t for t, s in after if s == 200), None)
    recovered_s = None if first_ok is None else round(first_ok - t_up, 2)
    not_ok_after_recovery = [s for t, s in after if first_ok is not None and t > first_ok and s != 200]
    def count(xs):
        xs = [str(x) for x in xs]
        return {k: xs.count(k) for k in sorted(set(xs))}

    result = {
        "seconds": seconds, "outage_s": ctx.args.api_outage_s, "orders": len(orders),
        "pg_down_at_s": round(t_down - t0, 1), "pg_up_at_s": round(t_up - t0, 1),
        "wrk_requests": int(total_req.group(1)) if total_req else None,
        "wrk_statuses": statuses, "wrk_errors": errors, "wrk_latency": latency,
        "probe_before": count(before), "probe_during": count(during),
        "probe_after": count([s for _, s in after]),
        "probe_max_s": round(max((d for _, _, d in probe_log), default=0), 2),
        "recovered_s": recovered_s, "errors_after_recovery": len(not_ok_after_recovery),
        "api_alive": api_alive,
    }
    allowed = {"200", "503"}
    result["pass"] = (set(statuses) <= allowed and errors.get("timeout", 1) == 0
                      and all(str(s) in ("503",) for s in during if s != 200)
                      and recovered_s is not None and recovered_s <= 10 and api_alive)
    log(f"api under fault: {'PASS' if result['pass'] else 'FAIL'} {json.dumps(result)}")
    return result, orders


SQL_META = ["' OR '1'='1", "'; DROP TABLE orders; --", "\" OR 1=1 --", "1; SELECT pg_sleep(5)",
            "') OR ('a'='a", "\\'; --", "$$; SELECT 1; $$", "%' OR '%'='", "1' UNION SELECT NULL--",
            "ORD-1'/*", "\u0000", "x\u0000' OR 1=1", "' || (SELECT version()) || '", "＇ OR 1=1"]

PROTECTED = [
    ("GET", "/orders?storeNumber=1", None, "order:read"),
    ("GET", "/orders/number/ORD-1", None, "order:read"),
    ("GET", "/orders/store/1", None, "order:read"),
    ("GET", "/orders/customer/cust-1", None, "order:read"),
    ("GET", "/orders/{id}", None, "order:read"),
    ("PATCH", "/orders/{id}/status", {"status": "PROCESSING"}, "order:write"),
    ("PATCH", "/orders/{id}/fulfillment", {"instructions": "x"}, "order:write"),
    ("POST", "/orders/{id}/cancel", {"reason": "x"}, "order:write"),
    ("POST", "/orders/{id}/notes", {"note": "x"}, "order:write"),
    ("POST", "/graphql", {"query": "{ order(id: \"{id}\") { id } }"}, "order:read"),
]


def security(ctx, keys, orders, logdir) -> dict:
    pg = ctx.pg
    db = "fault_api"
    api = Api(ctx, pg.url(db), keys, logdir)
    base = api.base
    cases = []  # (group, description, passed, detail)
    oid = orders[1]["id"]

    def expect(group, desc, method, path, body, token, ok, raw_auth=None):
        status, payload, took = request(base, method, path, token, body, timeout=10, raw_auth=raw_auth)
        passed = ok(status, payload) and took < 5
        cases.append((group, desc, passed, f"{method} {path} -> {status} in {took:.2f}s"
                      + ("" if passed else f" {payload[:200]!r}")))

    good = keys.rs256(claims())
    bad_tokens = {
        "no token": None,
        "alg none": Keys.none(claims()),
        "HS256 signed with the public key": keys.hs256_with_public_key(claims()),
        "expired (exp 120 s ago)": keys.rs256(claims(exp=int(time.time()) - 120)),
        "not yet valid (nbf in 1 h)": keys.rs256(claims(nbf=int(time.time()) + 3600)),
        "wrong issuer": keys.rs256(claims(iss="https://evil.example")),
        "wrong audience": keys.rs256(claims(aud="other-api")),
        "no exp": keys.rs256(claims(exp=None)),
        "signed by another key": keys.rs256(claims(), key=keys.other_private),
        "tampered payload": good.split(".")[0] + "." + b64(json.dumps(claims(scope="order:read order:write admin")).encode()) + "." + good.split(".")[2],
        "garbage": "not.a.token",
    }
    for method, path, body, scope in PROTECTED:
        p = path.replace("{id}", oid)
        b = json.loads(json.dumps(body).replace("{id}", oid)) if body else None
        for desc, tok in bad_tokens.items():
            expect("401 without a valid token", f"{desc}: {method} {path}", method, p, b, tok,
                   lambda s, _: s == 401)
        expect("401 without a valid token", f"Basic auth: {method} {path}", method, p, b, None,
               lambda s, _: s == 401, raw_auth="Basic Zm9vOmJhcg==")
        wrong = "profile" if scope == "order:read" else "order:read"
        if path == "/graphql":
            expect("403 with the wrong scope", f"scope {wrong}: {method} {path}", method, p, b,
                   keys.rs256(claims(scope=wrong)),
                   lambda s, body: s == 200 and b"FORBIDDEN" in body and b'"id"' not in body)
            expect("403 with the wrong scope", "scope order:read: graphql mutation", method, p,
                   {"query": f'mutation {{ addOrderNote(id: "{oid}", note: "x") {{ id }} }}'},
                   keys.rs256(claims(scope="order:read")),
                   lambda s, body: s == 200 and b"FORBIDDEN" in body)
        else:
            expect("403 with the wrong scope", f"scope {wrong}: {method} {path}", method, p, b,
                   keys.rs256(claims(scope=wrong)), lambda s, _: s == 403)
    # SQL metacharacters in every string parameter: an ordinary 4xx or an empty/literal result.
    ok4 = lambda s, _: isinstance(s, int) and (s == 200 or 400 <= s < 500)  # noqa: E731
    q = urllib.parse.quote
    for m in SQL_META:
        e = q(m, safe="")
        for path in [f"/orders/{e}", f"/orders/number/{e}", f"/orders/store/{e}", f"/orders/customer/{e}",
                     f"/orders?storeNumber={e}", f"/orders?storeNumber=1&customerId={e}",
                     f"/orders?customerId={e}", f"/orders?storeNumber=1&status={e}",
                     f"/orders?storeNumber=1&startDate={e}", f"/orders?storeNumber=1&endDate={e}",
                     f"/orders?storeNumber=1&page={e}", f"/orders?storeNumber=1&size={e}",
                     f"/orders/store/1?limit={e}", f"/orders/store/1?offset={e}",
                     f"/orders/customer/cust-1?limit={e}"]:
            expect("SQL metacharacters", f"{m!r} in {path.split('?')[0]}", "GET", path, None, good,
                   lambda s, body: ok4(s, body) and (s != 200 or b"[]" in body or b'"orders":[]' in body
                                                      or b'"totalCount":0' in body))
        for route, field in [("status", "status")]:
            expect("SQL metacharacters", f"{m!r} as {field}", "PATCH", f"/orders/{oid}/{route}", {field: m}, good,
                   lambda s, _: isinstance(s, int) and 400 <= s < 500)
        expect("SQL metacharacters", f"{m!r} as fulfillmentDate", "PATCH", f"/orders/{oid}/fulfillment",
               {"fulfillmentDate": m}, good, lambda s, _: isinstance(s, int) and 400 <= s < 500)
        # Free text is stored literally: the note and pickup location read back unchanged.
        note_oid = orders[2]["id"]
        for route, field, method in [("notes", "note", "POST"), ("fulfillment", "pickupLocation", "PATCH"),
                                     ("cancel", "reason", "POST")]:
            def literal(s, body, field=field, m=m):
                if s in (400, 409, 422):
                    return True  # refused (NUL byte, or cancel of a cancelled order): ordinary 4xx
                if s != 200:
                    return False
                order = json.loads(body)
                details = order.get("fulfillmentDetails") or {}
                if field == "note":
                    return (details.get("instructions") or "").endswith(m)
                if field == "pickupLocation":
                    return details.get("pickupLocation") == m
                return True
            expect("SQL metacharacters", f"{m!r} as {field} (stored literally)", method,
                   f"/orders/{note_oid}/{route}", {field: m}, good, literal)
        gq = {"query": "query($n: String!, $c: String!) { orderByNumber(orderNumber: $n) { id } "
                       "ordersByCustomer(customerId: $c) { id } }", "variables": {"n": m, "c": m}}
        expect("SQL metacharacters", f"{m!r} in GraphQL variables", "POST", "/graphql", gq, good,
               lambda s, body: s == 200 and b"INTERNAL" not in body)
    # The orders table is still whole.
    n = int(pg.psql(db, "SELECT count(*) FROM orders"))
    cases.append(("SQL metacharacters", "orders table intact afterwards", n == len(orders), f"{n} rows"))
    api.stop()
    groups = {}
    for g, _, passed, _ in cases:
        t = groups.setdefault(g, [0, 0])
        t[0] += 1
        t[1] += int(passed)
    failures = [(g, d, det) for g, d, p, det in cases if not p]
    with open(os.path.join(logdir, "security-cases.txt"), "w") as f:
        for g, d, p, det in cases:
            f.write(f"{'PASS' if p else 'FAIL'}\t{g}\t{d}\t{det}\n")
    log(f"security: {sum(x[1] for x in groups.values())}/{len(cases)} passed; failures: {failures[:10]}")
    return {"groups": groups, "tried": len(cases), "passed": sum(x[1] for x in groups.values()),
            "failures": failures[:50]}


def schemathesis(ctx, keys, logdir) -> dict:
    pg = ctx.pg
    api = Api(ctx, pg.url("fault_api"), keys, logdir)
    token = keys.rs256(claims())
    report_dir = os.path.join(logdir, "schemathesis")
    out_path = os.path.join(logdir, "schemathesis.out")
    st = os.path.join(ctx.venv, "bin", "st")
    args = [st, "run", f"{api.base}/openapi.json", "-H", f"Authorization: Bearer {token}",
            "--checks", "all", "--max-examples", str(ctx.args.st_examples), "--workers", "1",
            "--request-timeout", "10", "--max-time", str(ctx.args.st_seconds),
            "--report", "junit", "--report-dir", report_dir, "--no-color", "--seed", str(ctx.args.seed)]
    env = dict(os.environ, SCHEMATHESIS_HOOKS="")
    try:
        # cwd: schemathesis keeps a cache directory (.schemathesis/) in its working directory.
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=ctx.args.st_seconds + 300,
                              env=env, cwd=logdir)
        out, rc = proc.stdout.decode(errors="replace"), proc.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode(errors="replace") + "\n(timed out)", -1
    open(out_path, "w").write(out)
    api.stop()
    summary = {"rc": rc, "command": " ".join(a if "Bearer" not in a else "Authorization: Bearer <token>" for a in args[1:])}
    for label in ["Operations", "Test cases", "Test Phases", "Failures", "Errors", "Warnings"]:
        m = re.search(rf"^\s*{label}:?\s+(.*)$", out, re.M)
        if m:
            summary[label.lower().replace(" ", "_")] = m.group(1).strip()
    by_check: dict[str, int] = {}
    for code, name in re.findall(r"^- (ST\d+) (.+?)\s*$", out, re.M):
        by_check[f"{code} {name}"] = by_check.get(f"{code} {name}", 0) + 1
    summary["by_check"] = by_check
    summary["server_errors"] = sum(n for k, n in by_check.items() if k.startswith("ST101"))
    # Response-side checks: the API must never break these. The request-side checks (ST201
    # schema-violating request accepted, ST202 schema-valid request rejected) also flag
    # business rules a schema cannot express (status transitions, startDate <= endDate).
    summary["response_violations"] = sum(
        n for k, n in by_check.items() if k.split()[0] in ("ST101", "ST102", "ST103", "ST104", "ST105", "ST106"))
    phases = re.findall(r"^\s*(?:✅|❌|⏭|⚠️?)?\s*(Examples|Coverage|Fuzzing|Stateful)\b.*$", out, re.M)
    summary["phases"] = phases
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if "FAILURES" in line), len(lines))
    head = [line for line in lines[:start] if line.strip()]
    tail = [line for line in lines if line.strip()][-12:]
    summary["tail"] = head[-25:] + ["..."] + tail
    log(f"schemathesis rc={rc}: " + "; ".join(f"{k}={v}" for k, v in summary.items() if k not in ("tail", "command")))
    return summary

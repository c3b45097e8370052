"""The ingest campaign: one scenario = fresh database + fresh stream, events published at a
steady rate while a fault is injected, then a full reconciliation of orderdb, the DLQ and the
group's pending list against what was published."""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
import re
from datetime import datetime, timezone
from decimal import Decimal

import redis
import redis.cluster

import events as ev
from cluster import PrivateRedisCluster
from infra import Proxy, free_port, kill9, log, spawn, stop

GROUP = "order-service"


class Publisher(threading.Thread):
    """XADDs the plan at `rate`/s with explicit, increasing ids, so that an XADD retried after a
    connection error (Redis restarting) is never applied twice: the retry of an entry that did
    land is refused as "equal or smaller than the top item"."""

    def __init__(self, url, key, planned, rate, base_ms, cluster=False):
        super().__init__(daemon=True)
        self.url, self.key, self.planned, self.rate = url, key, planned, rate
        self.cluster = cluster
        self.base_ms = base_ms
        self.ids: list[str] = []
        self.done = threading.Event()
        self.retries = 0
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as e:  # noqa: BLE001
            self.error = repr(e)
        finally:
            self.done.set()

    def _run(self):
        if self.cluster:
            # redis-py's cluster client: every pipeline names the one stream key, so it goes
            # whole to the node serving its slot, and follows a failover.
            r = redis.cluster.RedisCluster.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)
        else:
            r = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)
        start = time.monotonic()
        chunk = max(1, min(200, self.rate // 10 or 1))
        i = 0
        while i < len(self.planned):
            batch = self.planned[i:i + chunk]
            ids = [f"{self.base_ms}-{i + j + 1}" for j in range(len(batch))]
            while True:
                try:
                    pipe = r.pipeline(transaction=False)
                    for sid, p in zip(ids, batch):
                        etype = ev.TYPE if p.kind != "other" else "org.example.checkout.CheckoutAbandoned"
                        pipe.xadd(self.key, {"eventId": p.event_id, "eventType": etype, "payload": p.payload}, id=sid)
                    results = pipe.execute(raise_on_error=False)
                    bad = [x for x in results if isinstance(x, Exception) and "equal or smaller" not in str(x)]
                    if bad:
                        raise bad[0]
                    break
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                        redis.exceptions.ClusterError, redis.exceptions.RedisClusterException) as e:
                    self.retries += 1
                    if self.retries > 600:
                        raise RuntimeError(f"publisher gave up: {e}") from e
                    time.sleep(0.2)
            self.ids.extend(ids)
            i += len(batch)
            due = i / self.rate
            wait = due - (time.monotonic() - start)
            if wait > 0:
                time.sleep(wait)


class Workers:
    def __init__(self, ctx, redis_url, db_url, key, logdir, claim_idle_ms):
        self.ctx, self.redis_url, self.db_url, self.key = ctx, redis_url, db_url, key
        self.logdir, self.claim_idle_ms = logdir, claim_idle_ms
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts = 0

    def start(self, name):
        env = dict(os.environ, REDIS_URL=self.redis_url, DATABASE_URL=self.db_url, RUST_LOG="warn",
                   DB_CONNECT_TIMEOUT_MS="2000")
        args = [self.ctx.bin("order-ingest"), "--stream-key", self.key, "--consumer-group", GROUP,
                "--consumer-name", name, "--claim-idle-ms", str(self.claim_idle_ms),
                "--metrics-addr", f"127.0.0.1:{free_port()}", "--block-ms", "1000"]
        self.procs[name] = spawn(args, os.path.join(self.logdir, f"worker-{name}.log"), env=env)
        self.starts += 1

    def kill(self, name):
        kill9(self.procs[name])

    def stop_all(self):
        for p in self.procs.values():
            stop(p, timeout=20)

    def died(self):
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None and p.returncode not in (0, -9, -15)}


def migrate(ctx, db_url, logdir):
    out = subprocess.run([ctx.bin("order-ingest"), "migrate"], env=dict(os.environ, DATABASE_URL=db_url),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    open(os.path.join(logdir, "migrate.log"), "ab").write(out.stdout)
    if out.returncode != 0:
        raise RuntimeError(f"migrate failed: {out.stdout.decode()[-2000:]}")


def db_rows(pg, db) -> list[dict]:
    text = pg.psql(db, "SELECT row_to_json(o) FROM orders o", timeout=300)
    return [json.loads(line, parse_float=Decimal) for line in text.splitlines() if line.strip()]


def _dec(v):
    return None if v is None else Decimal(str(v))


def _inst(v):
    """An ISO-8601 instant (Z or offset, 0-9 fraction digits, seconds optional) as aware UTC."""
    if v is None:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d)(:\d\d)?(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)", str(v))
    if not m:
        return ("unparsable", str(v))
    head, sec, frac, tz = m.groups()
    tz = "+00:00" if tz == "Z" else (tz if ":" in tz else tz[:3] + ":" + tz[3:])
    text = f"{head}{sec or ':00'}.{((frac or '') + '000000')[:6]}{tz}"
    return datetime.fromisoformat(text).astimezone(timezone.utc)


COLUMNS = [("id", "id", str), ("storeNumber", "store_number", int), ("orderNumber", "order_number", str),
           ("customerId", "customer_id", str), ("fulfillmentType", "fulfillment_type", str),
           ("fulfillmentDate", "fulfillment_date", _inst), ("reservationId", "reservation_id", str),
           ("subtotal", "subtotal", _dec), ("discountTotal", "discount_total", _dec), ("taxTotal", "tax_total", _dec),
           ("fulfillmentCost", "fulfillment_cost", _dec), ("grandTotal", "grand_total", _dec),
           ("paymentStatus", "payment_status", str), ("paymentMethod", "payment_method", str),
           ("paymentReference", "payment_reference", str), ("status", "status", str),
           ("createdAt", "created_at", _inst), ("updatedAt", "updated_at", _inst), ("createdBy", "created_by", str),
           ("sessionId", "session_id", str)]


def _norm_item(i):
    return {"productId": i.get("productId"), "sku": i.get("sku"), "name": i.get("name"), "quantity": i.get("quantity"),
            "unitPrice": _dec(i.get("unitPrice")), "discountAmount": _dec(i.get("discountAmount") or 0)}


def _norm_disc(d):
    return {"discountId": d.get("discountId"), "code": d.get("code"), "description": d.get("description"),
            "type": d.get("type"), "appliedAmount": _dec(d.get("appliedAmount"))}


def _norm_details(d):
    if d is None:
        return None
    return {"type": d.get("type"), "scheduledDate": _inst(d.get("scheduledDate")),
            "deliveryAddress": d.get("deliveryAddress"), "pickupLocation": d.get("pickupLocation"),
            "instructions": d.get("instructions")}


def diff_order(published: dict, row: dict) -> list[str]:
    """Fields where the stored row differs from the published order."""
    exp = ev.expected_fields(published)
    bad = []
    for key, col, conv in COLUMNS:
        a, b = exp.get(key), row.get(col)
        a = None if a is None else conv(a)
        b = None if b is None else conv(b)
        if a != b:
            bad.append(f"{key}: published {a!r}, stored {b!r}")
    pairs = [("lineItems", "line_items", lambda v: [_norm_item(i) for i in v or []]),
             ("appliedDiscounts", "applied_discounts", lambda v: [_norm_disc(d) for d in v or []]),
             ("customerSnapshot", "customer_snapshot", lambda v: v),
             ("fulfillmentDetails", "fulfillment_details", _norm_details)]
    for key, col, conv in pairs:
        a, b = conv(exp.get(key)), conv(row.get(col))
        if a != b:
            bad.append(f"{key}: published {a!r}, stored {b!r}")
    return bad


def state(r, key):
    """(pending, behind, dlq length): `behind` is 0 once the group's last-delivered id is the
    stream's last id. (XINFO GROUPS `lag` is not used: after Redis reloads the group from the
    AOF its entries-read counter is off, and `lag` stays positive with nothing left to read.)"""
    try:
        pending = r.xpending(key, GROUP)["pending"]
        groups = r.xinfo_groups(key)
        group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
        last = r.xinfo_stream(key)["last-generated-id"]
        behind = None if group is None else (0 if group["last-delivered-id"] == last else 1)
        dlq = r.xlen(f"{key}:dlq")
        return pending, behind, dlq
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, redis.BusyLoadingError,
            redis.exceptions.ClusterError, redis.exceptions.RedisClusterException):
        return None, None, None


def run_scenario(ctx, name: str, title: str) -> dict:
    """Scenarios: kill (a), group (b), pg-restart (c), redis-restart (d), db-outage (e),
    cluster-failover (f)."""
    args = ctx.args
    logdir = os.path.join(ctx.workdir, name)
    os.makedirs(logdir, exist_ok=True)
    pg, rd = ctx.pg, ctx.redis
    db = f"fault_{name.replace('-', '_')}"
    key = f"faults:{name}:{os.getpid()}"
    pg.create_db(db)
    db_url = pg.url(db)
    migrate(ctx, db_url, logdir)
    proxy = None
    worker_db_url = db_url
    if name == "db-outage":
        proxy = Proxy(pg.port)
        worker_db_url = pg.url(db, proxy.port)
    seed = args.seed + sum(map(ord, name))
    rng = random.Random(seed)
    plan = ev.plan(args.events, args.poison_pct, seed, f"F{name[:2].upper()}")
    cluster = None
    redis_url = rd.url
    if name == "cluster-failover":
        # A Redis Cluster of its own; the workers are given every node as a seed.
        cluster = PrivateRedisCluster(ctx.workdir, ctx.root)
        cluster.start()
        redis_url = cluster.seeds()
        r = redis.cluster.RedisCluster.from_url(cluster.url(cluster.ports[0]), socket_timeout=10)
    else:
        r = redis.Redis.from_url(rd.url, socket_timeout=10)
        r.delete(key, f"{key}:dlq")
    # The group exists before anything is published, as checkout's stream and the
    # `order-service` group do in production (a consumer creates a missing group at `$`).
    r.xgroup_create(key, GROUP, id="0", mkstream=True)
    claim_ms = 3000
    workers = Workers(ctx, redis_url, worker_db_url, key, logdir, claim_ms)
    names = ["w1", "w2", "w3"] if name == "group" else ["w1"]
    for n in names:
        workers.start(n)
    kills = restarts = 0
    notes = []
    stalls: list[float | None] = []

    # Prelude: the orders whose numbers the conflict poison reuses, ingested before the run so
    # that "first one wins" is decided before any conflicting entry exists.
    base_ms = int(time.time() * 1000)
    pub_url = cluster.url(cluster.ports[0]) if cluster else rd.url
    pre = Publisher(pub_url, key, plan.prelude, 1000, base_ms, cluster=bool(cluster))
    pre.run()
    pre_ids = {p.order_id for p in plan.prelude}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        n = int(pg.psql(db, f"SELECT count(*) FROM orders WHERE id IN ({','.join(repr(i) for i in pre_ids)})"))
        if n == len(pre_ids):
            break
        time.sleep(0.3)
    else:
        notes.append("prelude not ingested within 60 s")

    duration = len(plan.events) / args.rate
    pub = Publisher(pub_url, key, plan.events, args.rate, base_ms + 1, cluster=bool(cluster))
    t0 = time.monotonic()
    pub.start()
    fault_log = []

    def at(frac):
        target = t0 + duration * frac
        while time.monotonic() < target:
            time.sleep(0.02)
        return round(time.monotonic() - t0, 2)

    if name == "kill":
        moments = sorted(rng.uniform(0.05, 0.95) for _ in range(args.kills))
        for m in moments:
            t = at(m)
            workers.kill("w1")
            kills += 1
            time.sleep(rng.uniform(0.2, 1.0))
            workers.start("w1")
            restarts += 1
            fault_log.append(f"SIGKILL+restart at {t}s")
    elif name == "group":
        t = at(0.5)
        workers.kill("w2")
        kills += 1
        fault_log.append(f"SIGKILL w2 for good at {t}s")
    elif name == "pg-restart":
        t = at(0.4)
        pg.stop("fast")
        time.sleep(3)
        pg.start()
        restarts += 1
        fault_log.append(f"PostgreSQL stopped at {t}s, started {round(time.monotonic() - t0, 2)}s")
    elif name == "redis-restart":
        t = at(0.4)
        rd.shutdown()
        time.sleep(3)
        rd.start()
        restarts += 1
        fault_log.append(f"Redis SHUTDOWN at {t}s (AOF), started {round(time.monotonic() - t0, 2)}s")
    elif name == "db-outage":
        t = at(0.3)
        proxy.partition()
        time.sleep(args.outage_s)
        proxy.heal()
        fault_log.append(f"database unreachable (silent) from {t}s for {args.outage_s}s")
    elif name == "cluster-failover":
        k, n = cluster.fail_over_twice(key, at, lambda: int(pg.psql(db, "SELECT count(*) FROM orders")),
                                       lambda: not pub.done.is_set(), stalls, fault_log, notes)
        kills += k
        restarts += n

    pub.done.wait(duration * 3 + 300)
    published_at = time.monotonic() - t0
    # On a cluster, a write the dying master had acknowledged but not yet replicated is gone with
    # it: Redis lost it, not ingest. What is reconciled is what the stream kept.
    kept = None
    if cluster:
        kept = set()
        start = "-"
        while True:
            page = r.xrange(key, start, "+", count=10000)
            if not page:
                break
            kept.update(sid.decode() if isinstance(sid, bytes) else sid for sid, _ in page)
            start = "(" + (page[-1][0].decode() if isinstance(page[-1][0], bytes) else page[-1][0])
    in_stream = (lambda sid: True) if kept is None else (lambda sid: sid in kept)
    # Drain: everything processed, nothing pending, bounded.
    n_valid = len({p.order_id for sid, p in zip(pub.ids, plan.events)
                   if p.kind in ("valid", "republish") and in_stream(sid)} | pre_ids)
    n_poison = sum(1 for sid, p in zip(pub.ids, plan.events) if p.kind in ev.POISON_KINDS and in_stream(sid))
    drain_deadline = time.monotonic() + args.drain_timeout
    drained = False
    while time.monotonic() < drain_deadline:
        pending, lag, dlq = state(r, key)
        try:
            stored = int(pg.psql(db, "SELECT count(*) FROM orders"))
        except subprocess.CalledProcessError:
            stored = -1
        if pending == 0 and lag == 0 and stored >= n_valid and (dlq or 0) >= n_poison:
            time.sleep(1.0)
            if state(r, key)[0] == 0:
                drained = True
                break
        time.sleep(0.5)
    drain_s = time.monotonic() - t0 - published_at
    died = workers.died()
    workers.stop_all()
    if proxy:
        proxy.close()

    # Reconcile.
    by_sid = dict(zip(pub.ids, plan.events))
    rows = db_rows(pg, db)
    stored_ids = [row["id"] for row in rows]
    expected_orders = {p.order_id: p.order for p in plan.prelude}
    published_orders = dict(expected_orders)
    published_orders.update({p.order_id: p.order for p in plan.events if p.kind in ("valid", "republish")})
    expected_orders.update({p.order_id: p.order for sid, p in by_sid.items()
                            if p.kind in ("valid", "republish") and in_stream(sid)})
    poison_ids = {p.order_id for p in plan.events if p.kind in ev.POISON_KINDS and p.order_id}
    stored_set = set(stored_ids)
    lost = [i for i in expected_orders if i not in stored_set]
    doubled_rows = len(stored_ids) - len(set(stored_ids))
    unexpected_rows = [i for i in stored_ids if i not in published_orders]
    poison_in_db = [i for i in stored_ids if i in poison_ids]
    mismatched = {}
    for row in rows:
        if row["id"] in published_orders:
            d = diff_order(published_orders[row["id"]], row)
            if d:
                mismatched[row["id"]] = d
    dlq_entries = r.xrange(f"{key}:dlq", "-", "+")
    seen = {}
    wrong_class, not_poison, payload_changed = [], [], []
    for _, fields in dlq_entries:
        f = {k.decode(): v for k, v in fields.items()}
        sid = f.get("streamId", b"").decode()
        seen[sid] = seen.get(sid, 0) + 1
        p = by_sid.get(sid)
        if p is None or p.kind not in ev.POISON_KINDS:
            not_poison.append(sid)
            continue
        if f.get("errorClass", b"").decode() != p.kind:
            wrong_class.append((sid, p.kind, f.get("errorClass", b"").decode()))
        if f.get("payload") != p.payload:
            payload_changed.append(sid)
    poison_sids = [sid for sid, p in by_sid.items() if p.kind in ev.POISON_KINDS and in_stream(sid)]
    dlq_missing = [sid for sid in poison_sids if sid not in seen]
    dlq_doubled = sum(n - 1 for n in seen.values() if n > 1)
    pending, lag, _ = state(r, key)
    per_class = {}
    for sid in poison_sids:
        per_class[by_sid[sid].kind] = per_class.get(by_sid[sid].kind, 0) + 1
    result = {
        "scenario": name, "title": title, "events": len(plan.events) + len(plan.prelude),
        "valid_orders": len(expected_orders), "poison": len(poison_sids), "poison_by_class": per_class,
        "other_type": sum(1 for p in plan.events if p.kind == "other"),
        "republished": sum(1 for p in plan.events if p.kind == "republish"),
        "kills": kills, "restarts": restarts, "worker_starts": workers.starts,
        "lost": len(lost) + len(dlq_missing),
        "lost_orders": len(lost), "lost_dead_letters": len(dlq_missing),
        "doubled": doubled_rows + dlq_doubled, "dlq_doubled": dlq_doubled,
        "misfiled": len(unexpected_rows) + len(poison_in_db) + len(wrong_class) + len(not_poison) + len(payload_changed),
        "field_mismatches": len(mismatched),
        "pending_after": pending, "lag_after": lag, "drained": drained,
        "publish_s": round(published_at, 1), "drain_s": round(drain_s, 1), "publisher_retries": pub.retries,
        "publisher_error": pub.error, "faults": fault_log, "notes": notes, "workers_crashed": died,
        "stalls_s": [round(x, 1) if x is not None else None for x in stalls],
        "lost_by_redis": (len(pub.ids) - sum(1 for sid in pub.ids if sid in kept)) if kept is not None else 0,
        "examples": {"lost": lost[:5], "dlq_missing": dlq_missing[:5], "wrong_class": wrong_class[:5],
                     "not_poison": not_poison[:5], "mismatch": dict(list(mismatched.items())[:3]),
                     "unexpected_rows": unexpected_rows[:5]},
    }
    ok = (result["lost"] == 0 and result["doubled"] == 0 and result["misfiled"] == 0
          and result["field_mismatches"] == 0 and pending == 0 and drained and not pub.error)
    result["pass"] = ok
    log(f"scenario {name}: {'PASS' if ok else 'FAIL'} "
        + json.dumps({k: result[k] for k in ('events', 'kills', 'restarts', 'lost', 'doubled', 'misfiled',
                                              'field_mismatches', 'pending_after', 'drained')}))
    if cluster:
        ok = ok and kills == 2 and all(x is not None for x in stalls)
        result["pass"] = ok
    # Clean up this scenario's keys and database (logs stay in the work dir).
    if not ctx.args.keep:
        try:
            if cluster:
                cluster.stop()
            else:
                r.delete(key, f"{key}:dlq")
            pg.drop_db(db)
        except Exception as e:  # noqa: BLE001
            log(f"cleanup of {name} failed: {e}")
    return result

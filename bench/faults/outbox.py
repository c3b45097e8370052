"""Outbox under faults (stage `outbox` of bench/faults/run.sh).

Order changes (notes, each with a unique text) go through the real order-api with a valid token
from several client threads, while two order-ingest processes relay the outbox to a stream of
this run's own on the private Redis. During the run the relay holding the role is SIGKILLed
(--outbox-kills times, restarted after half a second), Redis is restarted (SHUTDOWN, AOF kept)
and PostgreSQL is restarted (fast shutdown). After the drain (the outbox empty) the stream is
reconciled with the database:

- committed: every note found in the orders' instructions at the end (a change answered 503
  may or may not have committed; the database says which did);
- lost: committed notes with no event; phantom: events of notes that never committed;
- answered 2xx but not committed (must be 0);
- doubled: events seen more than once (same id); a duplicate must be byte-identical;
- per order, the first occurrences must be in `sequence` order, each one's order the previous
  one's plus this note (instructions grow by exactly one line), previousStatus the status before.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time

import redis

import api
import infra
import ingest
from infra import free_port, kill9, log, spawn, stop

ORDERS = 50


def seed(pg, db: str) -> list[str]:
    pg.psql(db, f"""
        INSERT INTO orders (id, store_number, order_number, customer_id, fulfillment_type, subtotal,
            discount_total, tax_total, fulfillment_cost, grand_total, payment_status, status,
            line_items, applied_discounts, created_at, updated_at)
        SELECT md5('outbox-' || n)::uuid, 1 + n % 20, 'ORD-OUTBOX-' || n, 'c-' || n, 'DELIVERY',
            19.99, 0, 1.60, 0, 21.59, 'COMPLETED', 'PAID', '[]', '[]', now(), now()
        FROM generate_series(1, {ORDERS}) AS n""")
    return pg.psql(db, "SELECT id FROM orders ORDER BY id").split()


class Relays:
    """Two order-ingest processes relaying to `key` (each consumes a stream of its own, empty)."""

    def __init__(self, ctx, db_url, key, logdir):
        self.ctx, self.db_url, self.key, self.logdir = ctx, db_url, key, logdir
        self.procs: dict[str, tuple] = {}
        self.starts = 0
        self.restarts = 0

    def start(self, name):
        port = free_port()
        env = dict(os.environ, REDIS_URL=self.ctx.redis.url, DATABASE_URL=self.db_url, RUST_LOG="warn",
                   DB_CONNECT_TIMEOUT_MS="2000", ORDER_UPDATES_STREAM_KEY=self.key,
                   ORDER_STREAM_KEY=f"{self.key}:{name}:in", ORDER_CONSUMER_NAME=name,
                   ORDER_INGEST_METRICS_ADDR=f"127.0.0.1:{port}", ORDER_BLOCK_MS="1000")
        proc = spawn([self.ctx.bin("order-ingest")], os.path.join(self.logdir, f"relay-{name}.log"), env=env)
        self.procs[name] = (proc, port)
        self.starts += 1

    def active(self) -> str | None:
        for name, (_, port) in self.procs.items():
            try:
                _, body, _ = api.request(f"http://127.0.0.1:{port}", "GET", "/metrics", timeout=2)
            except Exception:  # noqa: BLE001
                continue
            for line in body.decode(errors="replace").splitlines():
                if line.strip() == "order_outbox_relay_active 1":
                    return name
        return None

    def kill(self, name):
        kill9(self.procs[name][0])

    def revive(self):
        """Restarts every relay that exited, as Kubernetes would: one started while Redis or
        PostgreSQL is down refuses to start (exit 1), by design."""
        for name, (proc, _) in list(self.procs.items()):
            if proc.poll() is not None:
                self.restarts += 1
                self.start(name)

    def stop_all(self):
        for proc, _ in self.procs.values():
            stop(proc, timeout=25)


class Clients:
    """Threads sending notes until `total` were sent; each answer's status is kept per note."""

    def __init__(self, base, token, ids, total, threads, seed):
        self.base, self.token, self.ids, self.total = base, token, ids, total
        self.next = 0
        self.lock = threading.Lock()
        self.status: dict[str, object] = {}
        self.rng = random.Random(seed)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()

    def done(self) -> int:
        with self.lock:
            return len(self.status)

    def _run(self):
        while True:
            with self.lock:
                if self.next >= self.total:
                    return
                i = self.next
                self.next += 1
                order = self.ids[self.rng.randrange(len(self.ids))]
            note = f"c{i}"
            status, _, _ = api.request(self.base, "POST", f"/orders/{order}/notes", self.token,
                                       {"note": note}, timeout=15)
            with self.lock:
                self.status[note] = status

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))


def stream_events(url, key) -> list[dict]:
    r = redis.Redis.from_url(url)
    out, start = [], "-"
    while True:
        page = r.xrange(key, min=start, max="+", count=5000)
        for sid, fields in page:
            payload = fields.get(b"payload", b"").decode()
            out.append({"sid": sid.decode(), "payload": payload, "event": json.loads(payload)})
        if len(page) < 5000:
            return out
        start = "(" + page[-1][0].decode()


def reconcile(events, final_notes: dict[str, set[str]], status: dict) -> dict:
    committed = {n for notes in final_notes.values() for n in notes}
    first: dict[str, dict] = {}
    doubled = differing = 0
    per_order: dict[str, list[dict]] = {}
    for e in events:
        ce = e["event"]
        if ce["id"] in first:
            doubled += 1
            differing += first[ce["id"]]["payload"] != e["payload"]
            continue
        first[ce["id"]] = e
        per_order.setdefault(ce["subject"], []).append(ce)
    published = set()
    out_of_order = 0
    for subject, evs in per_order.items():
        prev = None
        for ce in evs:
            lines = (ce["data"]["order"].get("fulfillmentDetails") or {}).get("instructions", "").split("\n")
            published.add(lines[-1])
            if prev is not None:
                prev_lines = (prev["data"]["order"].get("fulfillmentDetails") or {}).get("instructions", "").split("\n")
                if (int(ce["sequence"]) <= int(prev["sequence"]) or lines[:-1] != prev_lines
                        or ce["data"]["previousStatus"] != prev["data"]["order"]["status"]):
                    out_of_order += 1
            prev = ce
    ok_not_committed = sorted(n for n, s in status.items() if s == 200 and n not in committed)
    return {
        "committed": len(committed), "published": len(first), "events": len(events),
        "lost": len(committed - published), "phantom": len(published - committed),
        "doubled": doubled, "duplicates_differing": differing, "out_of_order": out_of_order,
        "answered_2xx": sum(1 for s in status.values() if s == 200),
        "answered_other": {str(k): v for k, v in _count(s for s in status.values() if s != 200).items()},
        "ok_not_committed": len(ok_not_committed),
    }


def _count(xs):
    out: dict = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return out


def run(ctx, keys, logdir) -> dict:
    a = ctx.args
    pg, rd = ctx.pg, ctx.redis
    db = "fault_outbox"
    key = f"faults:outbox:{os.getpid()}:updated"
    pg.create_db(db)
    infra.on_cleanup(lambda: redis.Redis.from_url(rd.url).delete(key))
    ingest.migrate(ctx, pg.url(db), logdir)
    ids = seed(pg, db)
    relays = Relays(ctx, pg.url(db), key, logdir)
    relays.start("a")
    relays.start("b")
    service = api.Api(ctx, pg.url(db), keys, logdir)
    token = keys.rs256(api.claims())
    clients = Clients(service.base, token, ids, a.outbox_changes, a.outbox_clients, a.seed)
    started = time.monotonic()
    clients.start()
    kills = restarts = 0
    faults = sorted([(0.1 + 0.8 * i / max(1, a.outbox_kills), "kill") for i in range(a.outbox_kills)]
                    + [(0.4, "redis"), (0.7, "postgres")])
    for frac, kind in faults:
        while clients.done() < frac * a.outbox_changes and time.monotonic() - started < a.drain_timeout * 4:
            relays.revive()
            time.sleep(0.05)
        if kind == "kill":
            victim = relays.active() or "a"
            relays.kill(victim)
            time.sleep(0.5)
            relays.start(victim)
            kills += 1
        elif kind == "redis":
            rd.shutdown()
            time.sleep(2)
            rd.start()
            restarts += 1
        else:
            pg.stop("fast")
            time.sleep(2)
            pg.start()
            restarts += 1
        log(f"outbox: {kind} at {clients.done()} changes")
    while any(t.is_alive() for t in clients.threads) and time.monotonic() - started < a.drain_timeout * 4:
        relays.revive()
        time.sleep(0.5)
    clients.join(1)
    sent_in = time.monotonic() - started
    deadline = time.monotonic() + a.drain_timeout
    drained = False
    while time.monotonic() < deadline:
        relays.revive()
        try:
            if int(pg.psql(db, "SELECT count(*) FROM order_outbox")) == 0:
                drained = True
                break
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.5)
    drain_s = round(time.monotonic() - started - sent_in, 1)
    relays.stop_all()
    service.stop()
    final = {}
    rows = pg.psql(db, "SELECT json_object_agg(id, COALESCE(fulfillment_details->>'instructions', '')) FROM orders")
    for oid, text in json.loads(rows).items():
        final[oid] = {n for n in text.split("\n") if n}
    result = reconcile(stream_events(rd.url, key), final, clients.status)
    result.update({
        "changes": a.outbox_changes, "clients": a.outbox_clients, "orders": ORDERS, "kills": kills,
        "restarts": restarts, "relay_starts": relays.starts, "relay_revivals": relays.restarts, "drained": drained,
        "sent_s": round(sent_in, 1), "drain_s": drain_s,
    })
    result["pass"] = (drained and result["lost"] == 0 and result["phantom"] == 0 and result["out_of_order"] == 0
                      and result["duplicates_differing"] == 0 and result["ok_not_committed"] == 0)
    if not a.keep:
        pg.drop_db(db)
    return result


def render(w, title, r):
    w(f"## {title}")
    w("")
    if "error" in r:
        w(f"ERROR: {r['error']}")
        w("")
        return
    w(f"{r['changes']} notes on {r['orders']} orders through order-api ({r['clients']} client threads, a valid "
      "token), each note's text unique, while two order-ingest processes relay the outbox to a stream of the "
      f"run's own: the relay holding the role SIGKILLed {r['kills']} times (restarted after 0.5 s), Redis "
      "restarted (SHUTDOWN, AOF on) and PostgreSQL restarted (fast shutdown) mid-run; a relay that exits (one "
      f"started while a server is down refuses to start) is started again, as Kubernetes would "
      f"({r.get('relay_revivals', 0)} times). After the outbox drained, "
      "the stream was reconciled with the notes found in the orders: lost = committed with no event, phantom = "
      "an event of a change that did not commit, out of order = a first occurrence not in sequence order or "
      "not extending the order's previous event by exactly its note.")
    w("")
    w("| changes | answered 2xx | other answers | committed | published (distinct) | entries | lost | phantom "
      "| doubled | duplicates differing | out of order | 2xx not committed | drained in | result |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    other = ", ".join(f"{k}: {v}" for k, v in sorted(r["answered_other"].items())) or "-"
    w(f"| {r['changes']} | {r['answered_2xx']} | {other} | {r['committed']} | {r['published']} | {r['events']} "
      f"| {r['lost']} | {r['phantom']} | {r['doubled']} | {r['duplicates_differing']} | {r['out_of_order']} "
      f"| {r['ok_not_committed']} | {r['drain_s']} s | {'PASS' if r['pass'] else 'FAIL'} |")
    w("")

"""Events for the ingest campaign: valid orders in checkout's exact format (docs/compatibility.md §1), and
poison of every permanent-failure class, each tagged with what must become of it."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

TYPE = "org.example.checkout.OrderCompleted"
SOURCE = "urn:reactive-platform:checkout-service"

# The permanent-failure classes a payload can cause (order-ingest/src/event.rs). The other two
# classes are not properties of a payload: `store_rejected` is a refusal the store does not
# classify, `max_deliveries_exceeded` is about a consumer that keeps crashing on an entry.
POISON_KINDS = [
    "invalid_json",
    "not_cloudevent",
    "missing_order",
    "invalid_order",
    "invalid_value",
    "order_number_conflict",
]


def java_double(cents: int) -> str:
    """`cents / 100` printed like a Java double after checkout's map round trip."""
    neg = cents < 0
    cents = abs(cents)
    units, frac = divmod(cents, 100)
    if units >= 10_000_000:
        digits = f"{units}{frac:02d}"
        exp = len(digits) - 3
        mant = digits.rstrip("0")
        first, rest = mant[0], mant[1:] or "0"
        body = f"{first}.{rest}E{exp}"
    else:
        f = f"{frac:02d}".rstrip("0")
        body = f"{units}.{f or '0'}"
    return ("-" if neg else "") + body


def money(cents: int, rng: random.Random) -> str:
    if cents == 0 and rng.random() < 0.5:
        return "0"
    return java_double(cents)


def instant(t: datetime, digits: int) -> str:
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        base += "." + f"{t.microsecond:06d}{0:03d}"[:digits]
    return base + "Z"


def java_offset_time(t: datetime, rng: random.Random) -> str:
    """OffsetDateTime.toString(): seconds dropped when seconds and fraction are zero."""
    if rng.random() < 0.3:
        t = t.replace(second=0, microsecond=0)
        return t.strftime("%Y-%m-%dT%H:%MZ")
    return instant(t, rng.choice([0, 3, 6, 9]))


SKUS = [("SKU-100-BLU", "Trail Mug, blue", 1999), ("SKU-BAG", "Paper bag", 10),
        ("SKU-TENT-2P", "Two-person tent", 24900), ("SKU-SOCK", "Wool socks \u00e9\u00e8", 1450),
        ("SKU-LAMP", "Camp lamp \"deluxe\"", 3995), ("SKU-BIG", "Boat", 1_234_567_800)]


def make_order(rng: random.Random, number_prefix: str) -> dict:
    oid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    store = rng.randint(1, 2000)
    ftype = rng.choice(["DELIVERY", "PICKUP", "WILL_CALL", "IMMEDIATE"])
    items, subtotal = [], 0
    for _ in range(rng.randint(1, 4)):
        sku, name, price = rng.choice(SKUS[:-1] if rng.random() < 0.98 else SKUS)
        qty = rng.randint(1, 4)
        disc = rng.choice([None, 0, 100]) if price > 200 else None
        subtotal += price * qty - (disc or 0)
        items.append({"productId": rng.choice([f"prod-{sku}", None]), "sku": sku, "name": name, "quantity": qty,
                      "unitPrice": java_double(price), "discountAmount": None if disc is None else money(disc, rng),
                      "lineTotal": java_double(price * qty - (disc or 0))})
    discount = subtotal // 10 if rng.random() < 0.3 else 0
    tax = (subtotal - discount) * 8 // 100
    cost = 799 if ftype == "DELIVERY" else 0
    grand = subtotal - discount + tax + cost
    now = datetime.now(timezone.utc) - timedelta(seconds=rng.randint(0, 86400))
    cust = f"cust-{rng.randint(0, 999)}" if rng.random() < 0.9 else None
    details = None
    if ftype == "DELIVERY":
        details = {"type": "DELIVERY", "scheduledDate": instant(now + timedelta(days=2), 3),
                   "deliveryAddress": {"street1": f"{rng.randint(1, 999)} Harbor Rd", "street2": None, "city": "Portland",
                                       "state": "ME", "postalCode": "04101", "country": "US"},
                   "pickupLocation": None, "instructions": rng.choice([None, "Leave at the door", "Ring twice; it's loud"])}
    elif ftype == "PICKUP":
        details = {"type": "PICKUP", "scheduledDate": None, "deliveryAddress": None,
                   "pickupLocation": "Front desk", "instructions": None}
    return {
        "id": oid,
        "storeNumber": store,
        "orderNumber": f"{number_prefix}-{oid[:8]}{oid[24:]}",
        "customerId": cust,
        "fulfillmentType": ftype,
        "fulfillmentDate": rng.choice([None, instant(now + timedelta(days=1), 0)]),
        "reservationId": rng.choice([None, str(uuid.UUID(int=rng.getrandbits(128), version=4))]),
        "subtotal": java_double(subtotal),
        "discountTotal": money(discount, rng),
        "taxTotal": money(tax, rng),
        "fulfillmentCost": money(cost, rng),
        "grandTotal": java_double(grand),
        "paymentStatus": rng.choice(["COMPLETED", "AUTHORIZED"]),
        "paymentMethod": rng.choice(["CARD", None]),
        "paymentReference": f"pay_{oid[:12]}",
        "status": "PAID",
        "lineItems": items,
        "appliedDiscounts": [] if not discount else [
            {"discountId": "disc-10", "code": "SAVE10", "description": "10% off", "type": "PERCENTAGE",
             "appliedAmount": java_double(discount)}],
        "customerSnapshot": None if cust is None else {
            "customerId": cust, "firstName": "Zo\u00eb", "lastName": "O'Brien", "email": f"{cust}@example.com",
            "phone": None, "loyaltyTier": rng.choice([None, "GOLD"])},
        "fulfillmentDetails": details,
        "createdAt": instant(now, rng.choice([0, 3, 6])),
        "updatedAt": instant(now, 3),
        "createdBy": rng.choice([None, "checkout"]),
        "sessionId": rng.choice([None, str(uuid.UUID(int=rng.getrandbits(128), version=4))]),
    }


class Raw(str):
    """A JSON fragment written verbatim (money keeps its Java text)."""


def dumps(value) -> str:
    """JSON with the money strings written as bare numbers (they are number literals)."""
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dumps(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, Raw):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


MONEY_KEYS = {"subtotal", "discountTotal", "taxTotal", "fulfillmentCost", "grandTotal", "unitPrice",
              "discountAmount", "lineTotal", "appliedAmount"}


def order_json(order: dict) -> str:
    def conv(v, key=None):
        if isinstance(v, dict):
            return {k: conv(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        if key in MONEY_KEYS and isinstance(v, str):
            return Raw(v)
        return v
    return dumps(conv(order))


def envelope(order_text: str | None, rng: random.Random, event_id: str, subject: str | None,
             data_extra: str = "") -> str:
    t = java_offset_time(datetime.now(timezone.utc), rng)
    parts = ['"specversion":"1.0"', f'"id":"{event_id}"', f'"source":"{SOURCE}"', f'"type":"{TYPE}"']
    if subject is not None and rng.random() < 0.95:
        parts.append(f'"subject":"{subject}"')
    parts.append(f'"time":"{t}"')
    parts.append('"datacontenttype":"application/json"')
    data = f'"checkoutSessionId":"cs-{event_id[:8]}"'
    if order_text is not None:
        data += f',"order":{order_text}'
    parts.append('"data":{' + data + data_extra + "}")
    rng.shuffle(parts)
    return "{" + ",".join(parts) + "}"


@dataclass
class Planned:
    kind: str  # "valid", "republish", "other", a poison kind
    event_id: str
    payload: bytes
    order_id: str | None = None
    order: dict | None = None


@dataclass
class Plan:
    events: list[Planned] = field(default_factory=list)
    prelude: list[Planned] = field(default_factory=list)


def poison(kind: str, rng: random.Random, prelude_orders: list[dict], prefix: str) -> Planned:
    eid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    order = make_order(rng, prefix + "P")
    oid = order["id"]
    if kind == "invalid_json":
        text = envelope(order_json(order), rng, eid, oid)
        text = rng.choice([text[: rng.randint(1, len(text) - 2)], text.replace(":", "=", 1), "not json at all"])
    elif kind == "not_cloudevent":
        text = rng.choice([
            f'{{"type":"{TYPE}","source":"{SOURCE}","data":{{"order":{order_json(order)}}}}}',  # no id/specversion
            f'{{"specversion":"0.3","id":"{eid}","source":"{SOURCE}","type":"{TYPE}"}}',
            f'{{"specversion":"1.0","id":42,"source":"{SOURCE}","type":"{TYPE}"}}',
            "[1,2,3]",
            '"just a string"',
        ])
    elif kind == "missing_order":
        text = rng.choice([envelope(None, rng, eid, oid), envelope("null", rng, eid, oid),
                           f'{{"specversion":"1.0","id":"{eid}","source":"{SOURCE}","type":"{TYPE}"}}'])
    elif kind == "invalid_order":
        bad = dict(order)
        which = rng.randrange(4)
        if which == 0:
            bad["status"] = "TELEPORTED"
        elif which == 1:
            bad["storeNumber"] = "forty-two"
        elif which == 2:
            del bad["lineItems"]
        else:
            bad["fulfillmentType"] = "DRONE"
        text = envelope(order_json(bad), rng, eid, oid)
    elif kind == "invalid_value":
        bad = json.loads(json.dumps(order))
        which = rng.randrange(6)
        if which == 0:
            bad["storeNumber"] = 2001
        elif which == 1:
            bad["orderNumber"] = "X" * 51
        elif which == 2:
            bad["grandTotal"] = "10.005"
        elif which == 3:
            bad["subtotal"] = "1.0E10"
        elif which == 4:
            # PostgreSQL cannot store U+0000: the order must be dead-lettered, not stall the stream.
            bad["lineItems"][0]["name"] = "Trail\u0000Mug"
        else:
            # An exponent that rescaling would expand into a billion digits (found by this campaign).
            bad["lineItems"][0]["unitPrice"] = "1E999999999"
        text = envelope(order_json(bad), rng, eid, oid)
    elif kind == "order_number_conflict":
        bad = dict(order)
        bad["orderNumber"] = rng.choice(prelude_orders)["orderNumber"]
        text = envelope(order_json(bad), rng, eid, oid)
    else:
        raise ValueError(kind)
    return Planned(kind=kind, event_id=eid, payload=text.encode(), order_id=oid)


def plan(events: int, poison_pct: float, seed: int, prefix: str) -> Plan:
    """`events` entries: 1% (poison_pct) poison spread evenly over POISON_KINDS, 0.5% events of
    another type (skipped), 0.5% re-publications of an earlier valid order with a new event id
    (must not double), the rest valid orders."""
    rng = random.Random(seed)
    p = Plan()
    for _ in range(max(10, len(POISON_KINDS))):
        o = make_order(rng, prefix + "C")
        eid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        p.prelude.append(Planned("valid", eid, envelope(order_json(o), rng, eid, o["id"]).encode(), o["id"], o))
    prelude_orders = [x.order for x in p.prelude]
    n_poison = max(len(POISON_KINDS), round(events * poison_pct / 100))
    n_other = max(1, events // 200)
    n_repub = max(1, events // 200)
    n_valid = events - n_poison - n_other - n_repub
    kinds = ["valid"] * n_valid + [POISON_KINDS[i % len(POISON_KINDS)] for i in range(n_poison)] \
        + ["other"] * n_other + ["republish"] * n_repub
    rng.shuffle(kinds)
    valid_so_far: list[Planned] = []
    for kind in kinds:
        eid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if kind == "valid" or (kind == "republish" and not valid_so_far):
            o = make_order(rng, prefix)
            ev = Planned("valid", eid, envelope(order_json(o), rng, eid, o["id"]).encode(), o["id"], o)
            valid_so_far.append(ev)
        elif kind == "republish":
            src = rng.choice(valid_so_far)
            ev = Planned("republish", eid, envelope(order_json(src.order), rng, eid, src.order_id).encode(),
                         src.order_id, src.order)
        elif kind == "other":
            ev = Planned("other", eid, (
                f'{{"specversion":"1.0","id":"{eid}","source":"{SOURCE}",'
                f'"type":"org.example.checkout.CheckoutAbandoned","data":{{"cartId":"c-{eid[:6]}"}}}}').encode())
        else:
            ev = poison(kind, rng, prelude_orders, prefix)
        p.events.append(ev)
    return p


def expected_fields(order: dict) -> dict:
    """The published order, parsed with exact decimals, for the field-by-field comparison."""
    return json.loads(order_json(order), parse_float=Decimal)

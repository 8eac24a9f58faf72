"""The shop's invariants, checked from the topics and the services' SQLite files.

Used by `nerve demo shop` for its final summary and by tests/apps.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from nerve.apps.common import Report, query, read_topic, redelivered
from nerve.apps.shop import INITIAL_STOCK, LOW_STOCK, PROMO_WINDOW_MS


def check(bootstrap: str, state_root: Path) -> Report:
    viol: list[str] = []
    behind: list[str] = []
    views = {r.value["id"]: r.value for r in read_topic(bootstrap, "product-viewed")}
    orders = {r.value["id"]: r.value for r in read_topic(bootstrap, "product-sold")}
    bugs = {r.value["id"]: r.value for r in read_topic(bootstrap, "bug-reported")}
    inv_db = state_root / "inventory" / "inventory.sqlite"
    mkt_db = state_root / "marketing" / "marketing.sqlite"
    sup_db = state_root / "support" / "support.sqlite"

    def processed(db: Path, topic: str) -> set[str]:
        return {eid.split("/", 1)[1] for (eid,) in
                query(db, "SELECT event_id FROM processed WHERE event_id LIKE ?", (topic + "/%",))}

    def unsent(db: Path) -> int:
        return sum(n for (n,) in query(db, "SELECT COUNT(*) FROM outbox WHERE sent = 0"))

    # --- inventory: every sale changes stock exactly once
    missing = set(orders) - processed(inv_db, "product-sold")
    if missing:
        behind.append(f"inventory has not applied {len(missing)} of {len(orders)} orders")
    if unsent(inv_db):
        behind.append("inventory has unpublished stock-low events")
    applied = processed(inv_db, "product-sold")
    units: Counter[str] = Counter()
    for oid, order in orders.items():
        if oid in applied:
            for item in order["items"]:
                units[item["product"]] += int(item["qty"])
    stock = dict(query(inv_db, "SELECT product, qty FROM stock"))
    for product in set(units) | set(stock):
        want = INITIAL_STOCK - units[product]
        if stock.get(product, INITIAL_STOCK) != want:
            viol.append(f"stock of {product} is {stock.get(product)}, sales say {want}")
    lows = Counter(p for (p,) in query(inv_db, "SELECT product FROM stock_low"))
    for product in set(units) | set(lows):
        crossed = INITIAL_STOCK - units[product] < LOW_STOCK
        if lows[product] != (1 if crossed else 0):
            viol.append(f"{product}: {lows[product]} stock-low events, crossed={crossed}")

    # --- support: exactly one ticket per bug report
    tickets = Counter(b for (b,) in query(sup_db, "SELECT bug_id FROM tickets"))
    if set(bugs) - set(tickets):
        behind.append(f"support has no ticket yet for {len(set(bugs) - set(tickets))} bugs")
    if unsent(sup_db):
        behind.append("support has unpublished tickets")
    viol += [f"bug {b}: {n} tickets" for b, n in tickets.items() if n != 1]
    viol += [f"ticket for unknown bug {b}" for b in tickets if b not in bugs]

    # --- marketing: one promo per unbought view, never for a bought product
    missing_views = set(views) - processed(mkt_db, "product-viewed")
    missing_orders = set(orders) - processed(mkt_db, "product-sold")
    if missing_views or missing_orders:
        behind.append(f"marketing has not applied {len(missing_views)} views, "
                      f"{len(missing_orders)} orders")
    if unsent(mkt_db):
        behind.append("marketing has unpublished promotions")
    bought: dict[tuple[str, str], list[int]] = defaultdict(list)
    for order in orders.values():
        for item in order["items"]:
            bought[(order["customer"], item["product"])].append(order["ts"])

    def was_bought(view: dict[str, object]) -> bool:
        ts = int(view["ts"])  # type: ignore[call-overload]
        return any(ts <= t <= ts + PROMO_WINDOW_MS
                   for t in bought[(str(view["customer"]), str(view["product"]))])

    promos = Counter(v for (v,) in query(mkt_db, "SELECT view_id FROM promos"))
    viol += [f"view {v}: {n} promos" for v, n in promos.items() if n != 1]
    viol += [f"promo for view {v} of a product bought within the window"
             for v in promos if v in views and was_bought(views[v])]
    viol += [f"promo for unknown view {v}" for v in promos if v not in views]
    status = dict(query(mkt_db, "SELECT view_id, status FROM views"))
    viol += [f"view {v} marked bought but no purchase within the window"
             for v, s in status.items()
             if s == "bought" and v in views and not was_bought(views[v])]
    # Every view whose window closed before its partition's watermark must be resolved.
    marks: dict[int, list[int]] = defaultdict(list)
    for part, ts in query(mkt_db, "SELECT part, ts FROM watermarks"):
        marks[part].append(ts)
    for view_id, ts, part, st in query(mkt_db, "SELECT view_id, ts, part, status FROM views"):
        if st == "pending" and len(marks[part]) == 2 and ts + PROMO_WINDOW_MS < min(marks[part]):
            viol.append(f"view {view_id} still pending after its window closed")
    promo_topic = read_topic(bootstrap, "promotions")
    published = {r.value["view"] for r in promo_topic}
    if set(promos) - published:
        behind.append(f"{len(set(promos) - published)} promos not in the promotions topic")

    figures = {
        "views": len(views), "orders": len(orders), "bug reports": len(bugs),
        "units sold (inventory)": sum(INITIAL_STOCK - q for q in stock.values()),
        "stock-low events": sum(lows.values()), "tickets": sum(tickets.values()),
        "promos": sum(promos.values()),
        "views bought in window": sum(1 for s in status.values() if s == "bought"),
        "redelivered events skipped (current processes)": redelivered(
            state_root, ("inventory", "marketing", "support")),
    }
    return Report(figures, viol, behind)


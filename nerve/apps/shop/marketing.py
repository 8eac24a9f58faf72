"""Marketing: a view not followed by a purchase of that product within the window -> one promo.

    python -m nerve.apps.shop.marketing --bootstrap-server HOST:PORT --state-dir D

Windows run on event time (the `ts` the simulator stamps). product-viewed and product-sold are
both keyed by customer id with the same partition count, so partition N of each holds the same
customers. The two topics are consumed independently, so one can run ahead of the other: a view
expires only when BOTH topics' partition N have passed view.ts + window (the partition's
watermark is the minimum of the two), so a purchase inside the window is always seen first.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from nerve.apps.common import Record, SqliteService, enqueue, service_main
from nerve.apps.shop import METRICS_TOPIC, PROMO_WINDOW_MS


class Marketing(SqliteService):
    """Promotes products that were viewed but not bought (consumer group `marketing`)."""

    name = "marketing"
    metrics_topic = METRICS_TOPIC
    topics = ("product-viewed", "product-sold")
    # status: pending -> bought | promoted. promos has no UNIQUE(view_id) on purpose: "never
    # two for one view" must come from the processing, and the tests check it.
    schema = """
    CREATE TABLE IF NOT EXISTS views (
        view_id TEXT PRIMARY KEY, customer TEXT, product TEXT, ts INTEGER, part INTEGER,
        status TEXT NOT NULL DEFAULT 'pending');
    CREATE INDEX IF NOT EXISTS views_pending ON views(part, ts) WHERE status = 'pending';
    CREATE INDEX IF NOT EXISTS views_cp ON views(customer, product, ts);
    CREATE TABLE IF NOT EXISTS purchases (customer TEXT, product TEXT, ts INTEGER, order_id TEXT);
    CREATE INDEX IF NOT EXISTS purchases_cp ON purchases(customer, product, ts);
    CREATE TABLE IF NOT EXISTS watermarks (topic TEXT, part INTEGER, ts INTEGER,
        PRIMARY KEY (topic, part));
    CREATE TABLE IF NOT EXISTS promos (
        promo INTEGER PRIMARY KEY AUTOINCREMENT, view_id TEXT NOT NULL, customer TEXT,
        product TEXT, view_ts INTEGER, watermark INTEGER);
    """

    ACTION = "view -> promo decision"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._marks: dict[tuple[str, int], int] = {}  # this batch's newest ts per partition

    def apply(self, db: sqlite3.Connection, rec: Record) -> None:
        ev = rec.value
        if rec.topic == "product-viewed":
            (bought,) = db.execute(
                "SELECT COUNT(*) FROM purchases WHERE customer = ? AND product = ? "
                "AND ts BETWEEN ? AND ?",
                (ev["customer"], ev["product"], ev["ts"], ev["ts"] + PROMO_WINDOW_MS),
            ).fetchone()
            db.execute("INSERT INTO views VALUES (?, ?, ?, ?, ?, ?)",
                       (ev["id"], ev["customer"], ev["product"], ev["ts"], rec.partition,
                        "bought" if bought else "pending"))
            if bought:  # decided at once: no promo
                self.effect(self.ACTION, ev["ts"])
        else:
            for item in ev["items"]:
                db.execute("INSERT INTO purchases VALUES (?, ?, ?, ?)",
                           (ev["customer"], item["product"], ev["ts"], ev["id"]))
                cancelled = db.execute(
                    "UPDATE views SET status = 'bought' WHERE customer = ? AND product = ? "
                    "AND ts BETWEEN ? AND ? AND status = 'pending'",
                    (ev["customer"], item["product"], ev["ts"] - PROMO_WINDOW_MS, ev["ts"]),
                ).rowcount
                for _ in range(cancelled):  # decided by the purchase: no promo
                    self.effect(self.ACTION, ev["ts"])
        key = (rec.topic, rec.partition)
        self._marks[key] = max(self._marks.get(key, ev["ts"]), ev["ts"])

    def after_batch(self, db: sqlite3.Connection) -> None:
        # Watermarks and expiry once per partition per batch, not per event.
        db.executemany("INSERT INTO watermarks VALUES (?, ?, ?) ON CONFLICT DO UPDATE "
                       "SET ts = max(ts, excluded.ts)",
                       [(t, p, ts) for (t, p), ts in self._marks.items()])
        for part in sorted({p for _, p in self._marks}):
            self._expire(db, part)
        self._marks.clear()

    def _expire(self, db: sqlite3.Connection, part: int) -> None:
        rows = db.execute("SELECT topic, ts FROM watermarks WHERE part = ?", (part,)).fetchall()
        if len(rows) < len(self.topics):
            return  # one topic not seen yet on this partition: no watermark
        watermark = min(ts for _, ts in rows)
        expired = db.execute(
            "SELECT view_id, customer, product, ts FROM views "
            "WHERE part = ? AND status = 'pending' AND ts + ? < ?",
            (part, PROMO_WINDOW_MS, watermark),
        ).fetchall()
        for view_id, customer, product, ts in expired:
            db.execute("UPDATE views SET status = 'promoted' WHERE view_id = ?", (view_id,))
            db.execute("INSERT INTO promos(view_id, customer, product, view_ts, watermark) "
                       "VALUES (?, ?, ?, ?, ?)", (view_id, customer, product, ts, watermark))
            enqueue(db, "promotions", customer,
                    {"id": f"promo-{view_id}", "view": view_id, "customer": customer,
                     "product": product, "discount_pct": 10})
            # Due when the window closed: the latency is how long after that it was decided.
            self.effect(self.ACTION, ts + PROMO_WINDOW_MS)

    def stats(self, db: sqlite3.Connection) -> dict[str, Any]:
        counts = dict(db.execute("SELECT status, COUNT(*) FROM views GROUP BY status").fetchall())
        (promos,) = db.execute("SELECT COUNT(*) FROM promos").fetchone()
        return {"views": counts, "promos": promos}


if __name__ == "__main__":
    service_main(Marketing)

"""Inventory: stock per product from sales; publishes stock-low when stock crosses the threshold.

    python -m nerve.apps.shop.inventory --bootstrap-server HOST:PORT --state-dir D
"""

from __future__ import annotations

import sqlite3
from typing import Any

from nerve.apps.common import Record, SqliteService, enqueue, service_main
from nerve.apps.shop import INITIAL_STOCK, LOW_STOCK, METRICS_TOPIC


class Inventory(SqliteService):
    """Stock per product, decremented once per order item (consumer group `inventory`)."""

    name = "inventory"
    metrics_topic = METRICS_TOPIC
    topics = ("product-sold",)
    schema = """
    CREATE TABLE IF NOT EXISTS stock (product TEXT PRIMARY KEY, qty INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS stock_low (product TEXT, order_id TEXT, qty INTEGER);
    """

    def apply(self, db: sqlite3.Connection, rec: Record) -> None:
        order = rec.value
        self.effect("sale -> stock update", order["ts"])
        for item in order["items"]:
            product, qty = item["product"], int(item["qty"])
            db.execute("INSERT OR IGNORE INTO stock VALUES (?, ?)", (product, INITIAL_STOCK))
            (before,) = db.execute("SELECT qty FROM stock WHERE product = ?",
                                   (product,)).fetchone()
            after = before - qty
            db.execute("UPDATE stock SET qty = ? WHERE product = ?", (after, product))
            if before >= LOW_STOCK > after:
                db.execute("INSERT INTO stock_low VALUES (?, ?, ?)", (product, order["id"], after))
                enqueue(db, "stock-low", product,
                        {"id": f"low-{product}-{order['id']}", "product": product, "qty": after,
                         "threshold": LOW_STOCK, "order": order["id"]})

    def stats(self, db: sqlite3.Connection) -> dict[str, Any]:
        (sold,) = db.execute("SELECT COALESCE(SUM(?1 - qty), 0) FROM stock",
                             (INITIAL_STOCK,)).fetchone()
        (low,) = db.execute("SELECT COUNT(*) FROM stock_low").fetchone()
        return {"units_sold": sold, "stock_low": low}


if __name__ == "__main__":
    service_main(Inventory)

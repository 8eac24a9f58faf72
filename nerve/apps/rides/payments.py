"""Payments: charges each completed ride exactly once.

    python -m nerve.apps.rides.payments --bootstrap-server HOST:PORT --state-dir D
"""

from __future__ import annotations

import sqlite3
from typing import Any

from nerve.apps.common import Record, SqliteService, enqueue, service_main
from nerve.apps.rides import METRICS_TOPIC, fare_cents


class Payments(SqliteService):
    """Charges the rider of every ride-completed (consumer group `payments`)."""

    name = "payments"
    metrics_topic = METRICS_TOPIC
    topics = ("ride-completed",)
    # ride_id deliberately not UNIQUE: "charged once" must come from the processing (the
    # `processed` table, same transaction), and the tests check it.
    schema = """
    CREATE TABLE IF NOT EXISTS charges (
        charge INTEGER PRIMARY KEY AUTOINCREMENT, ride_id TEXT NOT NULL, rider TEXT,
        driver TEXT, amount_cents INTEGER NOT NULL, ts INTEGER);
    """

    def apply(self, db: sqlite3.Connection, rec: Record) -> None:
        ride = rec.value
        self.effect("completion -> charge", ride["ts"])
        amount = fare_cents(float(ride["distance_km"]))
        cur = db.execute("INSERT INTO charges(ride_id, rider, driver, amount_cents, ts) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (ride["ride"], ride["rider"], ride["driver"], amount, ride["ts"]))
        enqueue(db, "payments", ride["rider"],
                {"id": f"charge-{ride['ride']}", "charge": cur.lastrowid, "ride": ride["ride"],
                 "rider": ride["rider"], "amount_cents": amount})

    def stats(self, db: sqlite3.Connection) -> dict[str, Any]:
        n, total = db.execute("SELECT COUNT(*), COALESCE(SUM(amount_cents), 0) FROM charges"
                              ).fetchone()
        return {"charges": n, "revenue_cents": total}


if __name__ == "__main__":
    service_main(Payments)

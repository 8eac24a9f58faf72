"""Tracking: the latest known position of every driver and rider.

    python -m nerve.apps.rides.tracking --bootstrap-server HOST:PORT --state-dir D

Positions are upserted only if newer (event `ts`) than what is stored: ride-requests,
driver-locations, ride-matched (the rider is told the driver: the pickup notification) and
ride-completed are separate topics, so a rider's events can arrive out of
order across them.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from nerve.apps.common import Record, SqliteService, service_main
from nerve.apps.rides import METRICS_TOPIC

UPSERT_DRIVER = """
INSERT INTO drivers VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(driver) DO UPDATE SET
    x = excluded.x, y = excluded.y, ts = excluded.ts, ride = excluded.ride, zone = excluded.zone
WHERE excluded.ts >= drivers.ts
"""
UPSERT_RIDER = """
INSERT INTO riders VALUES (?, ?, ?, ?, ?) ON CONFLICT(rider) DO UPDATE SET
    x = excluded.x, y = excluded.y, ts = excluded.ts, status = excluded.status
WHERE excluded.ts >= riders.ts
"""


class Tracking(SqliteService):
    """Latest position per driver and rider (consumer group `tracking`)."""

    name = "tracking"
    metrics_topic = METRICS_TOPIC
    topics = ("driver-locations", "ride-requests", "ride-matched", "ride-completed")
    schema = """
    CREATE TABLE IF NOT EXISTS drivers (driver TEXT PRIMARY KEY, x REAL, y REAL, ts INTEGER,
        ride TEXT, zone TEXT);
    CREATE TABLE IF NOT EXISTS riders (rider TEXT PRIMARY KEY, x REAL, y REAL, ts INTEGER,
        status TEXT);
    """

    def apply(self, db: sqlite3.Connection, rec: Record) -> None:
        ev = rec.value
        if rec.topic == "driver-locations":
            db.execute(UPSERT_DRIVER, (ev["driver"], ev["x"], ev["y"], ev["ts"], ev["ride"],
                                       ev["zone"]))
            if ev.get("rider"):
                db.execute(UPSERT_RIDER, (ev["rider"], ev["x"], ev["y"], ev["ts"], "riding"))
        elif rec.topic == "ride-requests":
            x, y = ev["pickup"]
            db.execute(UPSERT_RIDER, (ev["rider"], x, y, ev["ts"], "waiting"))
        elif rec.topic == "ride-matched":
            # The rider's app is told which driver comes to the pickup.
            db.execute(UPSERT_RIDER, (ev["rider"], None, None, ev["ts"], "driver assigned"))
            self.effect("match -> pickup notification", ev["ts"])
        else:
            db.execute(UPSERT_RIDER, (ev["rider"], None, None, ev["ts"], "dropped off"))

    def stats(self, db: sqlite3.Connection) -> dict[str, Any]:
        (drivers,) = db.execute("SELECT COUNT(*) FROM drivers").fetchone()
        riding = dict(db.execute("SELECT status, COUNT(*) FROM riders GROUP BY status"))
        return {"drivers": drivers, "riders": riding}


if __name__ == "__main__":
    service_main(Tracking)

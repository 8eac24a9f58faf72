"""Support: one ticket per bug report.

    python -m nerve.apps.shop.support --bootstrap-server HOST:PORT --state-dir D
"""

from __future__ import annotations

import sqlite3
from typing import Any

from nerve.apps.common import Record, SqliteService, enqueue, service_main
from nerve.apps.shop import METRICS_TOPIC


class Support(SqliteService):
    """Opens a ticket for each bug report (consumer group `support`)."""

    name = "support"
    metrics_topic = METRICS_TOPIC
    topics = ("bug-reported",)
    # bug_id is deliberately not UNIQUE: "one ticket per report" must come from the processing
    # (the `processed` table), and the tests check it.
    schema = """
    CREATE TABLE IF NOT EXISTS tickets (
        ticket INTEGER PRIMARY KEY AUTOINCREMENT, bug_id TEXT NOT NULL, customer TEXT,
        page TEXT, opened_ts INTEGER);
    """

    def apply(self, db: sqlite3.Connection, rec: Record) -> None:
        bug = rec.value
        self.effect("bug report -> ticket", bug["ts"])
        cur = db.execute("INSERT INTO tickets(bug_id, customer, page, opened_ts) "
                         "VALUES (?, ?, ?, ?)", (bug["id"], bug["customer"], bug.get("page"),
                                                 bug["ts"]))
        enqueue(db, "support-tickets", bug["customer"],
                {"id": f"ticket-{cur.lastrowid}", "ticket": cur.lastrowid, "bug": bug["id"],
                 "customer": bug["customer"]})

    def stats(self, db: sqlite3.Connection) -> dict[str, Any]:
        (n,) = db.execute("SELECT COUNT(*) FROM tickets").fetchone()
        return {"tickets": n}


if __name__ == "__main__":
    service_main(Support)

"""Who produced to and fetched from which topic: the one thing the Kafka protocol cannot tell.

Importing this module registers a broker `on_start` hook that attaches an `Accounting` object
as `core.extensions["accounting"]`. The produce and fetch handlers feed it with one call per
request (see `record_produce` / `record_fetch`); the console only reads snapshots of it. Without
those calls (or against Apache Kafka) the backbone map shows topics and groups only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from nerve.broker import BrokerCore, on_start

EXTENSION_KEY = "accounting"


class Accounting:
    """Counters keyed by (client id, client host, topic): [requests, bytes, last seen ms].

    Plain dict updates on the broker's loop: no locks, nothing allocated per request once a
    client is known. Readers (the console, on the same loop) copy with `snapshot()`.
    """

    def __init__(self) -> None:
        self.produced: dict[tuple[str, str, str], list[int]] = {}
        self.fetched: dict[tuple[str, str, str], list[int]] = {}

    @staticmethod
    def _bump(table: dict[tuple[str, str, str], list[int]], key: tuple[str, str, str],
              nbytes: int) -> None:
        row = table.get(key)
        if row is None:
            table[key] = [1, nbytes, time.time_ns() // 1_000_000]
        else:
            row[0] += 1
            row[1] += nbytes
            row[2] = time.time_ns() // 1_000_000

    def record_produce(self, client_id: str | None, host: str, topic: str, nbytes: int) -> None:
        self._bump(self.produced, (client_id or "", host, topic), nbytes)

    def record_fetch(self, client_id: str | None, host: str, topics: Iterable[str],
                     nbytes: int) -> None:
        """One fetch response; its bytes are split evenly over the topics it read."""
        names = set(topics)
        if not names:
            return
        share = nbytes // len(names)
        for t in names:
            self._bump(self.fetched, (client_id or "", host, t), share)

    def forget_topic(self, topic: str) -> None:
        for table in (self.produced, self.fetched):
            for key in [k for k in table if k[2] == topic]:
                del table[key]

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        def rows(table: dict[tuple[str, str, str], list[int]]) -> list[dict[str, Any]]:
            return [{"client_id": c, "host": h, "topic": t, "requests": r[0], "bytes": r[1],
                     "last_ms": r[2]} for (c, h, t), r in table.items()]

        return {"produced": rows(self.produced), "fetched": rows(self.fetched)}


@on_start
async def _attach(core: BrokerCore) -> None:
    core.extensions.setdefault(EXTENSION_KEY, Accounting())


def of(core: BrokerCore | None) -> Accounting | None:
    if core is None:
        return None
    acct = core.extensions.get(EXTENSION_KEY)
    return acct if isinstance(acct, Accounting) else None

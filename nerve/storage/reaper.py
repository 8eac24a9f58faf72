"""Delayed deletion of retired segments and deleted topic directories.

Kafka renames a deleted segment to *.deleted and removes it after file.delete.delay.ms, so a
fetch that already holds the file keeps working. Here the due actions are blocking (close fds,
unlink, rmtree) and run in a worker thread; nothing in them touches loop-owned state.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable

log = logging.getLogger("nerve.storage")

Action = Callable[[], None]


class SegmentReaper:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._due: list[tuple[int, int, Action]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, action: Action, delay_ms: int) -> None:
        due = int(self.clock() * 1000) + max(delay_ms, 0)
        heapq.heappush(self._due, (due, next(self._seq), action))

    def pop_due(self, now_ms: int | None = None) -> list[Action]:
        now = int(self.clock() * 1000) if now_ms is None else now_ms
        out = []
        while self._due and self._due[0][0] <= now:
            out.append(heapq.heappop(self._due)[2])
        return out

    def pop_all(self) -> list[Action]:
        out = [a for _, _, a in sorted(self._due)]
        self._due.clear()
        return out

    @staticmethod
    def run(actions: list[Action]) -> None:
        """Blocking: run in a worker thread (or at shutdown)."""
        for action in actions:
            try:
                action()
            except OSError as exc:
                log.warning("deleting files failed: %s", exc)

    async def run_due(self) -> int:
        actions = self.pop_due()
        if actions:
            await asyncio.to_thread(self.run, actions)
        return len(actions)

    def run_all_now(self) -> None:
        self.run(self.pop_all())

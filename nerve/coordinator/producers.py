"""Producer id allocation for idempotent producers (InitProducerId without a transactional id).

Ids are handed out from blocks persisted ahead of use, like Kafka's ProducerIdManager: the
file records the end of the current block, so a crash never reuses an id and allocation does
not cost an fsync per producer.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK_SIZE = 1000


class ProducerIdManager:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._next = 0
        self._block_end = 0
        if path.exists():
            text = path.read_text().strip()
            if text:
                self._next = self._block_end = int(text)

    def next_producer_id(self) -> int:
        if self._next >= self._block_end:
            self._reserve(self._next + BLOCK_SIZE)
        pid = self._next
        self._next += 1
        return pid

    def _reserve(self, block_end: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(f"{block_end}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._block_end = block_end

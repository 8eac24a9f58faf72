"""ProducerStateManager: idempotent-producer sequence checks, after Kafka's rules.

Per producer id: its epoch and the metadata of its last 5 batches (Kafka's
NUM_BATCHES_TO_RETAIN), enough to answer a retried batch with its original offsets.
Persistence: a JSON snapshot `<log end offset>.snapshot` is written at clean close; at load the
newest usable snapshot is read and the batch HEADERS after it are scanned (without a snapshot,
the headers of the whole log). Producer ids idle for `producer.id.expiration.ms` (by the
timestamp of their last batch or marker, Kafka's lastTimestamp) and with no open transaction
are forgotten by `remove_expired`; a later batch of such an id is accepted as from an unknown
producer.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path

from nerve.protocol.records import BatchHeader
from nerve.storage.errors import (
    DuplicateSequenceError,
    InvalidProducerEpochError,
    OutOfOrderSequenceError,
)
from nerve.storage.files import write_file_atomic

BATCHES_TO_RETAIN = 5
NO_EPOCH = -1
_INT32_MAX = 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int  # the batch's max timestamp as stored (the stamp for LogAppendTime)


@dataclass(slots=True)
class ProducerStateEntry:
    producer_id: int
    epoch: int = NO_EPOCH
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=BATCHES_TO_RETAIN))
    last_timestamp: int = -1  # of its last batch or marker: producer.id.expiration.ms

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    def copy(self) -> ProducerStateEntry:
        return ProducerStateEntry(self.producer_id, self.epoch,
                                  deque(self.batches, maxlen=BATCHES_TO_RETAIN),
                                  self.last_timestamp)

    def add(self, epoch: int, meta: BatchMetadata) -> None:
        if epoch != self.epoch:
            self.batches.clear()
            self.epoch = epoch
        self.batches.append(meta)
        self.last_timestamp = meta.timestamp

    def find_duplicate(self, epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if epoch != self.epoch:
            return None
        for meta in self.batches:
            if meta.first_seq == first_seq and meta.last_seq == last_seq:
                return meta
        return None


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (last_seq == _INT32_MAX and next_seq == 0)


class ProducerStateManager:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerStateEntry] = {}
        # Open transactions at the snapshot (producer id -> first offset), for txn_index.py.
        self.txn_ongoing: dict[int, int] = {}
        self.changed = False  # since the last snapshot read or written

    def __len__(self) -> int:
        return len(self.producers)

    def check(
        self,
        staged: dict[int, ProducerStateEntry],
        header: BatchHeader,
        first_offset: int,
        last_offset: int,
        timestamp: int,
        log_append_time: bool,
    ) -> None:
        """Validate one idempotent batch and stage its state change in `staged`.

        Raises before anything is written, so a rejected append leaves no trace. `staged`
        is committed with `commit` once the bytes are in the log.
        """
        pid, epoch = header.producer_id, header.producer_epoch
        first_seq, last_seq = header.base_sequence, header.last_sequence
        entry = staged.get(pid) or self.producers.get(pid)
        if entry is not None:
            dup = entry.find_duplicate(epoch, first_seq, last_seq)
            if dup is not None:
                raise DuplicateSequenceError(dup.first_offset,
                                             dup.timestamp if log_append_time else -1,
                                             last_offset=dup.last_offset)
            if epoch < entry.epoch:
                raise InvalidProducerEpochError(
                    f"producer {pid}: epoch {epoch} is older than {entry.epoch}")
            if epoch != entry.epoch:
                if first_seq != 0 and entry.epoch != NO_EPOCH:
                    raise OutOfOrderSequenceError(
                        f"producer {pid}: new epoch {epoch} must start at sequence 0, "
                        f"got {first_seq}")
            elif not _in_sequence(entry.last_seq, first_seq):
                raise OutOfOrderSequenceError(
                    f"producer {pid}: expected sequence {(entry.last_seq + 1) & _INT32_MAX}, "
                    f"got {first_seq}")
            entry = entry.copy()
        else:
            entry = ProducerStateEntry(pid)  # unknown producer: accepted, as in Kafka 4
        entry.add(epoch, BatchMetadata(first_seq, last_seq, first_offset, last_offset, timestamp))
        staged[pid] = entry

    def commit(self, staged: dict[int, ProducerStateEntry]) -> None:
        self.producers.update(staged)
        self.changed = True

    def load_header(self, header: BatchHeader) -> None:
        """Replay one stored batch at load: no checks, the log is the truth."""
        if header.producer_id < 0 or header.base_sequence < 0 or header.is_control:
            return
        entry = self.producers.get(header.producer_id)
        if entry is None:
            entry = self.producers[header.producer_id] = ProducerStateEntry(header.producer_id)
        if header.producer_epoch < entry.epoch:
            return
        self.changed = True
        entry.add(header.producer_epoch, BatchMetadata(
            header.base_sequence, header.last_sequence, header.base_offset, header.last_offset,
            header.max_timestamp))

    def load_marker(self, producer_id: int, epoch: int, timestamp: int) -> None:
        """A transaction marker: its epoch fences older ones (sequences go on in the same
        epoch, as in Kafka's transaction version 1)."""
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerStateEntry(producer_id)
        if epoch > entry.epoch:
            entry.batches.clear()
            entry.epoch = epoch
        entry.last_timestamp = max(entry.last_timestamp, timestamp)
        self.changed = True

    def remove_expired(self, now_ms: int, expiration_ms: int, keep: Container[int]) -> int:
        """Forget producers idle for `expiration_ms` (Kafka's producer.id.expiration.ms),
        except those in `keep` (an open transaction in this partition)."""
        expired = [pid for pid, e in self.producers.items()
                   if now_ms - e.last_timestamp >= expiration_ms and pid not in keep]
        for pid in expired:
            del self.producers[pid]
        if expired:
            self.changed = True
        return len(expired)

    # ---- snapshots ----

    def write_snapshot(
        self, path: Path, txn_ongoing: dict[int, int] | None = None, *, durable: bool = True
    ) -> None:
        data = {
            "version": 1,
            "ongoing": [[pid, first] for pid, first in (txn_ongoing or {}).items()],
            "producers": [
                {"id": e.producer_id, "epoch": e.epoch, "ts": e.last_timestamp,
                 "batches": [[b.first_seq, b.last_seq, b.first_offset, b.last_offset,
                              b.timestamp] for b in e.batches]}
                for e in self.producers.values()
            ],
        }
        write_file_atomic(path, json.dumps(data, separators=(",", ":")).encode(),
                          durable=durable)
        self.changed = False

    def read_snapshot(self, path: Path) -> bool:
        """Load a snapshot; False (state untouched) if it is unreadable."""
        try:
            data = json.loads(path.read_bytes())
            producers = {}
            for p in data["producers"]:
                entry = ProducerStateEntry(int(p["id"]), int(p["epoch"]))
                entry.batches.extend(BatchMetadata(*map(int, b)) for b in p["batches"])
                entry.last_timestamp = int(p.get("ts", entry.batches[-1].timestamp
                                                 if entry.batches else -1))
                producers[entry.producer_id] = entry
            ongoing = {int(pid): int(first) for pid, first in data.get("ongoing", ())}
        except (OSError, ValueError, KeyError, TypeError):
            return False
        self.producers = producers
        self.txn_ongoing = ongoing
        self.changed = False
        return True

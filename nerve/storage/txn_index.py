"""A partition's transactions: ongoing transactions (the last stable offset) and the
aborted-transaction index (Kafka's `.txnindex`), so read_committed fetches can stop at the LSO
and tell the client which producers' records to drop.

- Ongoing: producer id -> offset of its first transactional batch not yet closed by a marker.
  The LSO is the smallest of those, or the high watermark when there is none.
- Aborted: (producer id, first offset, last offset = the ABORT marker's offset, LSO then), kept
  per segment in `<base offset>.txnindex` files in Kafka's entry format (version int16 0, then
  four int64), appended when the marker is written, fsynced at clean close. After an unclean
  stop the headers replayed since the producer-state snapshot restore what the files lack.
Storage only: no protocol types. Markers are read with `marker_type` (the one place a control
record is decoded).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from nerve.protocol.records import BATCH_HEADER_SIZE, BatchHeader, _read_varint, build_batch

TXN_INDEX_SUFFIX = ".txnindex"
_ENTRY = struct.Struct(">hqqqq")
ABORT = 0
COMMIT = 1
_TRANSACTIONAL = 0x10
_CONTROL = 0x20


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


def txn_index_path(directory: Path, base_offset: int) -> Path:
    return directory / f"{base_offset:020d}{TXN_INDEX_SUFFIX}"


def marker_batch(producer_id: int, epoch: int, commit: bool, coordinator_epoch: int,
                 timestamp_ms: int) -> bytes:
    """One control batch holding one COMMIT or ABORT marker (Kafka's EndTransactionMarker)."""
    key = struct.pack(">hh", 0, COMMIT if commit else ABORT)
    value = struct.pack(">hi", 0, coordinator_epoch)
    return build_batch([(key, value)], timestamp_ms=timestamp_ms, producer_id=producer_id,
                       producer_epoch=epoch, attributes=_TRANSACTIONAL | _CONTROL,
                       partition_leader_epoch=0)


def marker_type(batch: bytes) -> int | None:
    """COMMIT or ABORT for a control batch's bytes; None when it is not a readable marker."""
    try:
        pos = BATCH_HEADER_SIZE
        _, pos = _read_varint(batch, pos)  # record length
        pos += 1  # attributes
        _, pos = _read_varint(batch, pos)  # timestamp delta
        _, pos = _read_varint(batch, pos)  # offset delta
        klen, pos = _read_varint(batch, pos)
        if klen < 4:
            return None
        _, kind = struct.unpack_from(">hh", batch, pos)
    except (IndexError, struct.error, ValueError):
        return None
    return kind if kind in (ABORT, COMMIT) else None


class PartitionTxnState:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ongoing: dict[int, int] = {}
        # segment base offset -> its aborted transactions, in marker order
        self.aborted: dict[int, list[AbortedTxn]] = {}
        self._bases: list[int] = []
        self._dirty: set[int] = set()

    # ---- load

    def load_indexes(self, bases: list[int], log_end: int) -> None:
        """Read every segment's .txnindex; entries past the log end (truncated) are dropped."""
        self._bases = sorted(bases)
        for base in self._bases:
            path = txn_index_path(self.directory, base)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            entries = []
            for off in range(0, len(data) - _ENTRY.size + 1, _ENTRY.size):
                version, pid, first, last, lso = _ENTRY.unpack_from(data, off)
                if version == 0 and last < log_end:
                    entries.append(AbortedTxn(pid, first, last, lso))
            if entries:
                self.aborted[base] = entries
            if len(entries) * _ENTRY.size != len(data):
                self._rewrite(base)

    def restore_ongoing(self, ongoing: dict[int, int]) -> None:
        self.ongoing = dict(ongoing)

    def replay(self, header: BatchHeader, batch: bytes | None, segment_base: int) -> None:
        """Apply one stored batch at load (after the snapshot): the log is the truth."""
        if not header.is_transactional:
            return
        if not header.is_control:
            self.ongoing.setdefault(header.producer_id, header.base_offset)
            return
        kind = marker_type(batch) if batch is not None else None
        if kind is None:
            return
        first = self.ongoing.pop(header.producer_id, None)
        if kind == ABORT and first is not None:
            entries = self.aborted.setdefault(segment_base, [])
            if not any(e.last_offset == header.base_offset for e in entries):
                entries.append(AbortedTxn(header.producer_id, first, header.base_offset,
                                          self.lso(header.base_offset)))
                self._dirty.add(segment_base)

    # ---- running

    def add_segment(self, base: int) -> None:
        if not self._bases or base > self._bases[-1]:
            self._bases.append(base)

    def on_data(self, producer_id: int, base_offset: int) -> None:
        self.ongoing.setdefault(producer_id, base_offset)

    def on_marker(self, producer_id: int, offset: int, commit: bool, segment_base: int,
                  high_watermark: int) -> None:
        first = self.ongoing.pop(producer_id, None)
        if commit or first is None:
            return
        entry = AbortedTxn(producer_id, first, offset, self.lso(high_watermark))
        self.aborted.setdefault(segment_base, []).append(entry)
        with open(txn_index_path(self.directory, segment_base), "ab") as f:
            f.write(_ENTRY.pack(0, *_fields(entry)))
        self._dirty.add(segment_base)

    def lso(self, high_watermark: int) -> int:
        return min(self.ongoing.values(), default=high_watermark)

    def aborted_between(self, start: int, upper: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping [start, upper)."""
        out: list[tuple[int, int]] = []
        if not self.aborted:
            return out
        # An entry lives in the segment of its marker: segments before the one holding
        # `start` only have markers below it. A later segment's marker may close a transaction
        # that began below `upper`, so none is skipped for its base alone.
        i = max(bisect.bisect_right(self._bases, start) - 1, 0)
        first_base = self._bases[i] if self._bases else 0
        for base in sorted(self.aborted):
            if base < first_base:
                continue
            for e in self.aborted[base]:
                if e.last_offset >= start and e.first_offset < upper:
                    out.append((e.producer_id, e.first_offset))
        return out

    def drop_segment(self, base: int) -> None:
        """Retention or DeleteRecords removed the segment: its index goes with it."""
        self.aborted.pop(base, None)
        self._dirty.discard(base)
        with contextlib.suppress(ValueError):
            self._bases.remove(base)
        with contextlib.suppress(FileNotFoundError):
            txn_index_path(self.directory, base).unlink()

    def sync(self) -> None:
        """Make every index written since load durable (clean close)."""
        for base in sorted(self._dirty):
            self._rewrite(base)
        self._dirty.clear()

    def _rewrite(self, base: int) -> None:
        path = txn_index_path(self.directory, base)
        entries = self.aborted.get(base, [])
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(_ENTRY.pack(0, *_fields(e)) for e in entries))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _fields(e: AbortedTxn) -> tuple[int, int, int, int]:
    return (e.producer_id, e.first_offset, e.last_offset, e.last_stable_offset)

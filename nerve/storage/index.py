"""OffsetIndex and TimeIndex: sparse, rebuildable caches beside each segment, as in Kafka.

Both are held in memory (arrays; 8-12 bytes per `index.interval.bytes` of log) and mirrored to
their file by appends. Kafka's formats, big-endian:
  .index      relative offset i32 + file position i32  (8 bytes)
  .timeindex  timestamp i64 + relative offset i32      (12 bytes)
nerve's offset index stores each indexed batch's BASE offset (Kafka stores the last offset):
a lookup then lands exactly on the batch that holds the offset more often. The time index
stores (max timestamp so far, LAST offset of the batch that holds it), like Kafka.
A sealed segment loads its index files on first use (Kafka's lazy indexes); an index that
fails the sanity check is rebuilt from the log by its segment. The append handle of an active
segment's index lives in the shared `HandleCache`: opened on the first entry written, closed
when idle.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
from array import array
from pathlib import Path

from nerve.storage.files import fsync_path, unlink_quietly, write_all
from nerve.storage.handles import CachedFile, HandleCache

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


class IndexCorruptError(Exception):
    """Raised by load(); the owning segment rebuilds the index from its log."""


class _IndexFile:
    entry: struct.Struct

    def __init__(self, path: Path, base_offset: int, handles: HandleCache) -> None:
        self.file = CachedFile(handles, path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.base_offset = base_offset
        self.dirty = False  # written since the last sync
        self.torn = False  # the file may hold more than the entries in memory

    @property
    def path(self) -> Path:
        return self.file.path

    @path.setter
    def path(self, value: Path) -> None:
        self.file.path = value

    def open_writer(self, *, truncate: bool) -> None:
        """Appends may follow; truncate=True empties (or creates) the file now."""
        if truncate:
            self.file.create(os.O_TRUNC)
            self.dirty = True

    def close_writer(self) -> None:
        self.file.release()

    def _write(self, data: bytes) -> None:
        if data:
            h = self.file.handle()
            write_all(h.fd, data)
            self.dirty = True

    def _append_entry(self, data: bytes) -> None:
        """Write one entry before it enters the arrays: a failed write (disk full) leaves
        both as they were (a torn entry is cut off, now or by `repair`)."""
        try:
            self._write(data)
        except OSError:
            self.torn = True
            with contextlib.suppress(OSError):
                self.repair()
            raise

    def truncate_entries(self, n: int) -> None:
        """Keep the first `n` entries (rollback of a failed append, log truncation)."""
        if n < len(self):
            self._drop_entries(n)
            self.torn = True
            self.repair()

    def repair(self) -> None:
        """Cut the file back to the entries in memory after a failed write or truncation."""
        if self.torn:
            if len(self):
                os.ftruncate(self.file.handle().fd, len(self) * self.entry.size)
            else:  # no entries, no file (it is created by its first entry)
                self.file.release()
                unlink_quietly(self.path)
            self.torn = False
            self.dirty = True

    def __len__(self) -> int:
        raise NotImplementedError

    def _drop_entries(self, n: int) -> None:
        raise NotImplementedError

    def read_raw(self, missing_is_empty: bool = False) -> bytes:
        """The file's entries. A file is created by its first entry, so a missing one is
        empty where no entry can have been written yet (`missing_is_empty`)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if missing_is_empty:
                return b""
            raise IndexCorruptError(f"{self.path.name} is missing") from None
        if len(data) % self.entry.size:
            raise IndexCorruptError(f"{self.path.name}: size {len(data)} is not whole entries")
        return data

    def _replace_all(self, data: bytes) -> None:
        """Rewrite the file with `data`; no entries means no file (nothing to fsync)."""
        self.close_writer()
        if not data:
            unlink_quietly(self.path)
            return
        self.open_writer(truncate=True)
        self._write(data)

    def sync(self) -> None:
        # Cleared first: an entry appended on the loop during the fsync keeps it dirty.
        self.dirty = False
        try:
            fsync_path(self.path)
        except OSError:
            self.dirty = True
            raise


class OffsetIndex(_IndexFile):
    entry = _OFFSET_ENTRY

    def __init__(self, path: Path, base_offset: int, handles: HandleCache) -> None:
        super().__init__(path, base_offset, handles)
        self.relative_offsets = array("i")
        self.positions = array("i")

    def __len__(self) -> int:
        return len(self.positions)

    def load(self, log_size: int, interval: int = 0) -> None:
        """Read the file; Kafka-style sanity check of the last entry only (cheap). The first
        entry is written past `interval` bytes of log."""
        data = self.read_raw(missing_is_empty=log_size <= interval)
        rel = array("i")
        pos = array("i")
        for r, p in _OFFSET_ENTRY.iter_unpack(data):
            rel.append(r)
            pos.append(p)
        if pos and (pos[-1] >= log_size or rel[-1] < 0 or pos[-1] < 0):
            raise IndexCorruptError(f"{self.path.name}: last entry points past the log")
        if len(pos) >= 2 and (pos[-1] <= pos[-2] or rel[-1] <= rel[-2]):
            raise IndexCorruptError(f"{self.path.name}: entries are not increasing")
        self.relative_offsets, self.positions = rel, pos

    def append(self, offset: int, position: int) -> None:
        rel = offset - self.base_offset
        self._append_entry(_OFFSET_ENTRY.pack(rel, position))
        self.relative_offsets.append(rel)
        self.positions.append(position)

    def _drop_entries(self, n: int) -> None:
        del self.relative_offsets[n:]
        del self.positions[n:]

    def rewrite(self, entries: list[tuple[int, int]]) -> None:
        """Replace all entries with (absolute offset, position) pairs; used by rebuilds."""
        self.relative_offsets = array("i", (o - self.base_offset for o, _ in entries))
        self.positions = array("i", (p for _, p in entries))
        self._replace_all(b"".join(_OFFSET_ENTRY.pack(r, p)
                                   for r, p in zip(self.relative_offsets, self.positions,
                                                   strict=True)))

    def lookup_entry(self, offset: int) -> tuple[int, int]:
        """(base offset, position) of the last indexed batch whose base offset is <= offset,
        else (the segment's base offset, 0)."""
        i = bisect.bisect_right(self.relative_offsets, offset - self.base_offset)
        if not i:
            return self.base_offset, 0
        return self.relative_offsets[i - 1] + self.base_offset, self.positions[i - 1]

    def lookup_position(self, position: int) -> tuple[int, int]:
        """(base offset, position) of the last indexed batch at or before `position`, else
        (the segment's base offset, 0): a known batch boundary."""
        i = bisect.bisect_right(self.positions, position)
        if not i:
            return self.base_offset, 0
        return self.relative_offsets[i - 1] + self.base_offset, self.positions[i - 1]

    def entry_after(self, position: int) -> tuple[int, int] | None:
        """(position, base offset) of the first entry past `position`: where a search for
        the next good batch after damage can stop."""
        i = bisect.bisect_right(self.positions, position)
        if i >= len(self.positions):
            return None
        return self.positions[i], self.relative_offsets[i] + self.base_offset

    @property
    def full_bytes(self) -> int:
        return len(self.positions) * _OFFSET_ENTRY.size


class TimeIndex(_IndexFile):
    entry = _TIME_ENTRY

    def __init__(self, path: Path, base_offset: int, handles: HandleCache) -> None:
        super().__init__(path, base_offset, handles)
        self.timestamps = array("q")
        self.relative_offsets = array("i")

    def __len__(self) -> int:
        return len(self.timestamps)

    def load(self, next_offset: int) -> None:
        data = self.read_raw(missing_is_empty=next_offset <= self.base_offset)
        ts = array("q")
        rel = array("i")
        for t, r in _TIME_ENTRY.iter_unpack(data):
            ts.append(t)
            rel.append(r)
        if rel and (rel[-1] < 0 or rel[-1] + self.base_offset >= max(next_offset, 1)):
            raise IndexCorruptError(f"{self.path.name}: last entry points past the log")
        if len(ts) >= 2 and (ts[-1] <= ts[-2] or rel[-1] < rel[-2]):
            raise IndexCorruptError(f"{self.path.name}: entries are not increasing")
        self.timestamps, self.relative_offsets = ts, rel

    @property
    def last_timestamp(self) -> int:
        return self.timestamps[-1] if self.timestamps else -1

    @property
    def last_offset(self) -> int:
        return self.relative_offsets[-1] + self.base_offset if self.timestamps else -1

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Append only when the timestamp grows: entries stay strictly increasing."""
        if timestamp > self.last_timestamp:
            rel = offset - self.base_offset
            self._append_entry(_TIME_ENTRY.pack(timestamp, rel))
            self.timestamps.append(timestamp)
            self.relative_offsets.append(rel)

    def _drop_entries(self, n: int) -> None:
        del self.timestamps[n:]
        del self.relative_offsets[n:]

    def rewrite(self, entries: list[tuple[int, int]]) -> None:
        """Replace all entries with (timestamp, absolute offset) pairs."""
        self.timestamps = array("q", (t for t, _ in entries))
        self.relative_offsets = array("i", (o - self.base_offset for _, o in entries))
        self._replace_all(b"".join(_TIME_ENTRY.pack(t, r)
                                   for t, r in zip(self.timestamps, self.relative_offsets,
                                                   strict=True)))

    def lookup_before(self, timestamp: int) -> int:
        """Offset of the last entry whose timestamp is < `timestamp`, else -1.

        Every batch up to (and including) the batch holding that offset has max timestamp
        < target, so a scan for the first batch with max timestamp >= target starts there.
        """
        i = bisect.bisect_left(self.timestamps, timestamp)
        return self.relative_offsets[i - 1] + self.base_offset if i else -1

"""LogSegment: one `.log` file of whole batches plus its two index caches (Kafka's LogSegment).

All methods run on the event loop except `destroy` (reaper thread) and the fsyncs done by a
flush token (any thread). Reads never decode records: they pread 61-byte batch headers.
Files are opened through the shared `HandleCache` when used, never held for the segment's
life; a sealed segment opened at start reads its indexes on first use (Kafka's lazy indexes).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from nerve.protocol.records import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    CorruptRecordError,
    read_header,
    valid_prefix,
)
from nerve.storage.files import (
    DELETED_SUFFIX,
    index_path,
    log_path,
    read_all,
    time_index_path,
    unlink_quietly,
    write_all,
)
from nerve.storage.handles import CachedFile, FileHandle, HandleCache, shared_cache
from nerve.storage.index import IndexCorruptError, OffsetIndex, TimeIndex

log = logging.getLogger("nerve.storage")

# Header walks read this much at a time: index entries are index.interval.bytes apart, so one
# window usually covers a whole lookup.
HEADER_WINDOW = 16 * 1024
# Recovery reads the log in chunks of this size (bigger batches get a read of their own).
RECOVERY_CHUNK = 4 * 1024 * 1024
_MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD

# (position within the appended buffer, base offset, last offset, max timestamp, size)
BatchPlan = tuple[int, int, int, int, int]

_READ_FLAGS = os.O_RDONLY
_APPEND_FLAGS = os.O_RDWR | os.O_APPEND  # one descriptor appends, preads and sendfiles


class LogSegment:
    def __init__(
        self, directory: Path, base_offset: int, index_interval_bytes: int,
        handles: HandleCache | None = None,
    ) -> None:
        handles = handles if handles is not None else shared_cache()
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.file = CachedFile(handles, log_path(directory, base_offset), _READ_FLAGS)
        self.offset_index = OffsetIndex(index_path(directory, base_offset), base_offset, handles)
        self.time_index = TimeIndex(time_index_path(directory, base_offset), base_offset,
                                    handles)
        self._indexes_loaded = True  # False: a sealed segment whose index files are unread
        self.size = 0
        self.next_offset = base_offset
        self._max_timestamp = -1
        self._offset_of_max_timestamp = -1  # last offset of the first batch holding it
        self.rolling_timestamp = -1  # first batch's max timestamp: segment.ms basis (Kafka)
        self.created_ms = -1
        self.flushed_size = 0
        self.indexes_flushed = True  # only meaningful once sealed
        self.sealed = False
        self.retired = False
        self._bytes_since_index = 0

    @property
    def path(self) -> Path:
        return self.file.path

    @path.setter
    def path(self, value: Path) -> None:
        self.file.path = value

    def handle(self) -> FileHandle:
        """The log file's open handle (see handles.py: hold it while using its fd)."""
        return self.file.handle()

    @property
    def max_timestamp(self) -> int:
        if not self._indexes_loaded:
            self.load_indexes()
        return self._max_timestamp

    @property
    def offset_of_max_timestamp(self) -> int:
        if not self._indexes_loaded:
            self.load_indexes()
        return self._offset_of_max_timestamp

    # ---- lifecycle ----

    @classmethod
    def create(
        cls, directory: Path, base_offset: int, index_interval_bytes: int, now_ms: int,
        handles: HandleCache | None = None,
    ) -> LogSegment:
        seg = cls(directory, base_offset, index_interval_bytes, handles)
        seg.file.flags = _APPEND_FLAGS
        seg.file.create(os.O_CREAT | os.O_TRUNC)
        try:
            seg.offset_index.open_writer(truncate=True)
            seg.time_index.open_writer(truncate=True)
        except OSError:
            seg.close()
            for path in (seg.path, seg.offset_index.path, seg.time_index.path):
                unlink_quietly(path)
            raise
        seg.created_ms = now_ms
        return seg

    @classmethod
    def open(
        cls,
        directory: Path,
        base_offset: int,
        index_interval_bytes: int,
        *,
        next_offset: int | None,
        recover: bool = False,
        handles: HandleCache | None = None,
    ) -> LogSegment:
        """Open an existing segment, trusting its indexes if they pass a sanity check.

        next_offset is the following segment's base offset; None for the last segment, whose
        end is found by walking headers from its last offset index entry. recover=True
        validates every batch instead (unclean shutdown) and rebuilds the indexes.
        """
        seg = cls(directory, base_offset, index_interval_bytes, handles)
        st = os.stat(seg.path)  # no descriptor: a sealed segment opens its files when read
        seg.size = seg.flushed_size = st.st_size
        seg.created_ms = int(st.st_mtime * 1000)
        seg.sealed = next_offset is not None
        if next_offset is None:
            seg.file.flags = _APPEND_FLAGS  # the last segment: activated next
        if recover:
            seg.recover()
            return seg
        if next_offset is not None:
            seg.next_offset = next_offset
            seg._indexes_loaded = False
            return seg
        try:
            seg.offset_index.load(seg.size)
            next_offset = base_offset
            last_pos = seg.offset_index.positions[-1] if len(seg.offset_index) else 0
            for pos, header in seg.iter_headers(last_pos):
                next_offset = header.next_offset
                seg._bytes_since_index = pos + header.size - last_pos
            seg.next_offset = next_offset
            seg._load_time_index()
        except (IndexCorruptError, CorruptRecordError):
            seg.rebuild_indexes()
        if seg.size >= BATCH_HEADER_SIZE:
            h = seg.handle()
            seg.rolling_timestamp = read_header(os.pread(h.fd, BATCH_HEADER_SIZE, 0)) \
                .max_timestamp
        return seg

    def _load_time_index(self) -> None:
        self.time_index.load(self.next_offset)
        self._max_timestamp = self.time_index.last_timestamp
        self._offset_of_max_timestamp = self.time_index.last_offset

    def load_indexes(self) -> None:
        """Read a sealed segment's index files (first use after start); rebuild on damage."""
        self._indexes_loaded = True
        try:
            self.offset_index.load(self.size)
            self._load_time_index()
        except IndexCorruptError:
            self.rebuild_indexes()

    def activate(self) -> None:
        """The last segment takes appends (its files open when first written)."""
        if not self._indexes_loaded:
            self.load_indexes()
        self.file.reopen(_APPEND_FLAGS)
        self.sealed = False

    def seal(self) -> None:
        """No more appends: write the final time index entry (so the segment's largest
        timestamp survives a reopen, as Kafka does on roll) and drop the append fds."""
        if not self.sealed and self._max_timestamp >= 0:
            self.time_index.maybe_append(self._max_timestamp, self._offset_of_max_timestamp)
        self.offset_index.close_writer()
        self.time_index.close_writer()
        # An open read-write handle stays cached for reads; later opens are read-only.
        self.file.flags = _READ_FLAGS
        if not self.sealed:
            self.sealed = True
            self.indexes_flushed = False

    def close(self) -> None:
        self.seal()
        self.file.release()

    def retire(self) -> None:
        """Rename the files to *.deleted (Kafka's way) and drop the cached handle: readers
        holding a handle keep reading the renamed (later unlinked) file."""
        self.seal()
        self.file.release()
        self.retired = True
        for index in (self.offset_index, self.time_index):
            new = index.path.with_name(index.path.name + DELETED_SUFFIX)
            with contextlib.suppress(FileNotFoundError):
                os.rename(index.path, new)
            index.path = new
        new = self.path.with_name(self.path.name + DELETED_SUFFIX)
        os.rename(self.path, new)
        self.path = new

    def destroy(self) -> None:
        """Blocking unlink: runs in the reaper's worker thread (after `retire` on the loop)."""
        for path in (self.path, self.offset_index.path, self.time_index.path):
            unlink_quietly(path)

    # ---- append ----

    def append(self, records: bytes | bytearray | memoryview, plan: list[BatchPlan]) -> None:
        assert not self.sealed, "append to a sealed segment"
        start = self.size
        h = self.file.handle()
        try:
            write_all(h.fd, records)
        except OSError:
            # A short write (disk full) must not leave half a batch before the next append.
            os.ftruncate(h.fd, start)
            raise
        interval = self.index_interval_bytes
        max_ts_so_far, max_ts_offset = self._max_timestamp, self._offset_of_max_timestamp
        since = self._bytes_since_index
        for pos, base, last, max_ts, size in plan:
            if max_ts > max_ts_so_far:
                max_ts_so_far, max_ts_offset = max_ts, last
            if self.rolling_timestamp < 0:
                self.rolling_timestamp = max_ts
            if since > interval:
                self.offset_index.append(base, start + pos)
                self.time_index.maybe_append(max_ts_so_far, max_ts_offset)
                since = 0
            since += size
        self._max_timestamp, self._offset_of_max_timestamp = max_ts_so_far, max_ts_offset
        self._bytes_since_index = since
        self.size = start + len(records)
        self.next_offset = plan[-1][2] + 1

    # ---- reads ----

    def iter_headers(
        self, position: int, end: int | None = None, window: int = HEADER_WINDOW
    ) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of each batch from `position` (a batch boundary) to `end`."""
        end = self.size if end is None else end
        buf = b""
        buf_start = position
        h = self.file.handle() if position < end else None  # held while the walk goes on
        while position < end:
            assert h is not None
            off = position - buf_start
            if off + BATCH_HEADER_SIZE > len(buf):
                buf = os.pread(h.fd, max(min(window, end - position),
                                                 BATCH_HEADER_SIZE), position)
                buf_start, off = position, 0
            header = read_header(buf, off)  # raises CorruptRecordError when torn
            if header.batch_length < _MIN_BATCH_LENGTH or position + header.size > end:
                raise CorruptRecordError(f"{self.path.name}: bad batch at position {position}")
            yield position, header
            position += header.size

    def find_batch(self, offset: int) -> tuple[int, BatchHeader] | None:
        """The batch holding `offset` (or the first one after it): index lookup + header walk."""
        if not self._indexes_loaded:
            self.load_indexes()
        for pos, header in self.iter_headers(self.offset_index.lookup(offset)):
            if header.last_offset >= offset:
                return pos, header
        return None

    def read(self, offset: int, max_bytes: int, min_one: bool) -> tuple[int, int] | None:
        """(position, size) of whole batches from the one holding `offset`, within max_bytes
        (or exactly one batch if the first is bigger and min_one); None past the end."""
        found = self.find_batch(offset)
        if found is None:
            return None
        pos, header = found
        if self.size - pos <= max_bytes:
            return pos, self.size - pos
        if header.size > max_bytes:
            return pos, header.size if min_one else 0
        # Unlike Kafka (which may end a fetch mid-batch), cut at a batch boundary: start the
        # walk from the last indexed boundary before the limit so it stays short.
        limit = pos + max_bytes
        boundary = max(self.offset_index.lookup_position(limit), pos)
        for p, h in self.iter_headers(boundary):
            if p + h.size > limit:
                break
            boundary = p + h.size
        return pos, boundary - pos

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(base offset, max timestamp) of the first batch with max timestamp >= target."""
        if self.max_timestamp < timestamp:  # loads the indexes of a sealed segment
            return None
        start = 0
        known = self.time_index.lookup_before(timestamp)
        if known >= 0:
            found = self.find_batch(known)
            start = found[0] if found else 0
        for _, header in self.iter_headers(start):
            if header.max_timestamp >= timestamp:
                return header.base_offset, header.max_timestamp
        return None

    def largest_timestamp(self) -> int:
        """Retention's clock: the largest record timestamp, else the file's mtime (Kafka)."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        try:
            return int(os.stat(self.path).st_mtime * 1000)
        except FileNotFoundError:
            return -1

    # ---- recovery and index rebuilds ----

    def _reset_from_headers(self, batches: list[tuple[int, BatchHeader]]) -> None:
        offsets: list[tuple[int, int]] = []
        times: list[tuple[int, int]] = []
        since = 0
        max_ts = -1
        max_ts_offset = -1
        for pos, h in batches:
            if h.max_timestamp > max_ts:
                max_ts, max_ts_offset = h.max_timestamp, h.last_offset
            if since > self.index_interval_bytes:
                offsets.append((h.base_offset, pos))
                if not times or max_ts > times[-1][0]:
                    times.append((max_ts, max_ts_offset))
                since = 0
            since += h.size
        if self.sealed and max_ts >= 0 and (not times or max_ts > times[-1][0]):
            times.append((max_ts, max_ts_offset))
        self.offset_index.rewrite(offsets)
        self.time_index.rewrite(times)
        if self.sealed:
            self.offset_index.close_writer()
            self.time_index.close_writer()
            self.indexes_flushed = False
        self._indexes_loaded = True
        self._bytes_since_index = since
        self._max_timestamp, self._offset_of_max_timestamp = max_ts, max_ts_offset
        self.next_offset = batches[-1][1].next_offset if batches else self.base_offset
        self.rolling_timestamp = batches[0][1].max_timestamp if batches else -1

    def rebuild_indexes(self) -> None:
        """Indexes are caches: rebuild both from the batch headers of the log."""
        try:
            batches = list(self.iter_headers(0, window=RECOVERY_CHUNK))
        except CorruptRecordError:
            self.recover()
            return
        self._reset_from_headers(batches)

    def recover(self) -> int:
        """Validate every batch (CRC included), truncate at the first bad or torn one, rebuild
        the indexes. Returns the number of bytes truncated."""
        h = self.file.handle()
        size = os.fstat(h.fd).st_size
        batches: list[tuple[int, BatchHeader]] = []
        expected = self.base_offset
        pos = 0
        want = RECOVERY_CHUNK
        while pos < size:
            buf = read_all(h.fd, pos, want)
            n, headers = valid_prefix(buf)
            broken = False
            for h in headers:
                if h.base_offset != expected:  # a CRC-valid batch in the wrong place
                    broken = True
                    break
                batches.append((pos, h))
                pos += h.size
                expected = h.next_offset
            if broken or pos >= size:
                break
            # valid_prefix stopped early: the chunk may end mid-batch, or the batch is bad.
            rest = len(buf) - n
            want = RECOVERY_CHUNK
            if rest >= LOG_OVERHEAD:
                length = int.from_bytes(buf[n + 8 : n + 12], "big", signed=True)
                need = length + LOG_OVERHEAD
                if length >= _MIN_BATCH_LENGTH and need > rest and pos + need <= size:
                    want = max(need, RECOVERY_CHUNK)  # cut by the chunk: re-read it whole
                    continue
            elif pos + rest < size:
                continue  # fewer than 12 bytes left in this chunk, more in the file
            break  # a torn or corrupt batch
        truncated = size - pos
        if truncated:
            log.warning("%s: truncated segment %d to %d bytes, dropped %d of %d bytes "
                        "(torn or corrupt batch)", self.directory.name, self.base_offset, pos,
                        truncated, size)
            os.truncate(self.path, pos)
        self.size = pos
        self.flushed_size = 0  # the truncation (and maybe the data) is not durable yet
        self._reset_from_headers(batches)
        return truncated

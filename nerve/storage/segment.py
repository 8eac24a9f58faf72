"""LogSegment: one `.log` file of whole batches plus its two index caches (Kafka's LogSegment).

All methods run on the event loop except `destroy` (reaper thread) and the fsyncs done by a
flush token (any thread). Reads never decode records: they pread 61-byte batch headers.
Files are opened through the shared `HandleCache` when used, never held for the segment's
life; a sealed segment opened at start reads its indexes on first use (Kafka's lazy indexes).

Damage (bit rot, a bad sector) below the recovery point never truncates: walks over headers
check their structure (magic, length, base offset continuity, see scan.py), and a place that
fails is remembered in `damage`, logged once, and skipped; fetches that reach it raise
CorruptLogError (Kafka's CORRUPT_MESSAGE). Batches older than this process (below
`loaded_size`) are also CRC-checked when a fetch starts at them; everything else is left to
the clients' check.crcs, as in Kafka.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from nerve.protocol.records import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    read_header,
    valid_prefix,
)
from nerve.storage import scan
from nerve.storage.errors import CorruptLogError
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
from nerve.storage.scan import Damage

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
        self.damage: dict[int, Damage] = {}  # damaged places found so far, by position
        self.loaded_size = 0  # bytes that were on disk when the segment was opened
        self._crc_checked = -1  # position of the last batch a fetch CRC-checked
        self._torn = False  # the log file may be longer than `size` (a failed rollback)
        self.truncated_at_load = False  # recovery cut a torn or corrupt tail

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
        # The index files are created by their first entry (most partitions of a big topic
        # may never get one); a leftover of an earlier segment at this offset must not load.
        unlink_quietly(seg.offset_index.path)
        unlink_quietly(seg.time_index.path)
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
        recover_from: int | None = None,
        handles: HandleCache | None = None,
    ) -> LogSegment:
        """Open an existing segment, trusting its indexes if they pass a sanity check.

        next_offset is the following segment's base offset; None for the last segment, whose
        end is found by walking headers from its last offset index entry. recover_from (an
        unclean stop) validates every batch from that offset on (the recovery point; below
        it the data was fsynced and is trusted), truncates at the first torn or corrupt one
        and rebuilds the indexes.
        """
        seg = cls(directory, base_offset, index_interval_bytes, handles)
        st = os.stat(seg.path)  # no descriptor: a sealed segment opens its files when read
        seg.size = seg.flushed_size = st.st_size
        seg.created_ms = int(st.st_mtime * 1000)
        seg.sealed = next_offset is not None
        if next_offset is None:
            seg.file.flags = _APPEND_FLAGS  # the last segment: activated next
        else:
            seg.next_offset = next_offset  # also bounds damage that runs to the end
        if recover_from is not None:
            seg.recover(recover_from)
        elif next_offset is not None:
            seg._indexes_loaded = False  # read on first use
        else:
            seg._load_last()
        seg.loaded_size = seg.size
        return seg

    def _load_last(self) -> None:
        """The last segment after a clean stop: its end is found from the last index entry."""
        try:
            self.offset_index.load(self.size, self.index_interval_bytes)
            next_offset, last_pos = self.offset_index.lookup_position(self.size)
            # The batches after the last index entry also give the largest timestamp, so a
            # clean stop need not write (and fsync) a final time index entry.
            tail_ts, tail_ts_offset = -1, -1
            for item in self._walk(last_pos, next_offset, known_end=False):
                if isinstance(item, Damage):
                    if item.next_offset < 0:  # nothing readable after it: cut it off
                        self._truncate(item.position, "damaged tail")
                        break
                    next_offset = item.next_offset
                else:
                    pos, header = item
                    next_offset = header.next_offset
                    self._bytes_since_index = pos + header.size - last_pos
                    if header.max_timestamp > tail_ts:
                        tail_ts, tail_ts_offset = header.max_timestamp, header.last_offset
            self.next_offset = next_offset
            self._load_time_index()
            if tail_ts > self._max_timestamp:
                self._max_timestamp, self._offset_of_max_timestamp = tail_ts, tail_ts_offset
        except IndexCorruptError:
            self.rebuild_indexes()
        if self.size >= BATCH_HEADER_SIZE:
            h = self.handle()
            self.rolling_timestamp = read_header(os.pread(h.fd, BATCH_HEADER_SIZE, 0)) \
                .max_timestamp

    def _load_time_index(self) -> None:
        self.time_index.load(self.next_offset)
        self._max_timestamp = self.time_index.last_timestamp
        self._offset_of_max_timestamp = self.time_index.last_offset

    def load_indexes(self) -> None:
        """Read a sealed segment's index files (first use after start); rebuild on damage."""
        self._indexes_loaded = True
        try:
            self.offset_index.load(self.size, self.index_interval_bytes)
            self._load_time_index()
        except IndexCorruptError:
            self.rebuild_indexes()

    def activate(self) -> None:
        """The last segment takes appends (its files open when first written)."""
        if not self._indexes_loaded:
            self.load_indexes()
        self.file.reopen(_APPEND_FLAGS)
        self.sealed = False

    def seal(self, *, final_time_entry: bool = True) -> None:
        """No more appends: write the final time index entry (so the segment's largest
        timestamp survives a reopen, as Kafka does on roll) and drop the append fds.
        final_time_entry=False at a clean stop: the active segment's reopen finds it."""
        if final_time_entry and not self.sealed and self._max_timestamp >= 0:
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

    def retire(self, *, seal: bool = True) -> None:
        """Rename the files to *.deleted (Kafka's way) and drop the cached handle: a fetch
        answer still to be sent opens the renamed file until `destroy` (file.delete.delay.ms
        later); a reader holding a handle keeps it even after that. seal=False: no
        final index entry (a segment dropped by a truncation, on a disk that may refuse)."""
        if seal:
            self.seal()
        else:
            self.offset_index.close_writer()
            self.time_index.close_writer()
            self.sealed = True
        self.file.retire()
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
        """Write whole batches and their index entries, or nothing: an OSError (disk full,
        EIO, no permission to reopen) rolls the files back to where they were and is raised."""
        assert not self.sealed, "append to a sealed segment"
        if self._torn:
            self.repair()  # an earlier rollback could not cut the files: first that
        start = self.size
        offset_entries, time_entries = len(self.offset_index), len(self.time_index)
        interval = self.index_interval_bytes
        max_ts_so_far, max_ts_offset = self._max_timestamp, self._offset_of_max_timestamp
        since = self._bytes_since_index
        try:
            h = self.file.handle()
            write_all(h.fd, records)
            for pos, base, last, max_ts, size in plan:
                if max_ts > max_ts_so_far:
                    max_ts_so_far, max_ts_offset = max_ts, last
                if since > interval:
                    self.offset_index.append(base, start + pos)
                    self.time_index.maybe_append(max_ts_so_far, max_ts_offset)
                    since = 0
                since += size
        except OSError:
            # Nothing of this append may stay: not half a batch before the next one, not an
            # index entry pointing past the log.
            self.offset_index._drop_entries(offset_entries)
            self.time_index._drop_entries(time_entries)
            self._torn = self.offset_index.torn = self.time_index.torn = True
            with contextlib.suppress(OSError):
                self.repair()
            raise
        if self.rolling_timestamp < 0:
            self.rolling_timestamp = plan[0][3]
        self._max_timestamp, self._offset_of_max_timestamp = max_ts_so_far, max_ts_offset
        self._bytes_since_index = since
        self.size = start + len(records)
        self.next_offset = plan[-1][2] + 1

    def repair(self) -> None:
        """Cut the log and index files back to what is in memory (after a failed append or
        truncation); raises OSError while the disk still refuses."""
        os.ftruncate(self.file.handle().fd, self.size)
        self._torn = False
        self.offset_index.repair()
        self.time_index.repair()

    def truncate_to(self, position: int) -> None:
        """Cut the segment to `position`, a batch boundary at or below its size (after a
        failed fsync: what was written since the last good one cannot be trusted)."""
        if position >= self.size:
            return
        if not self._indexes_loaded:
            self.load_indexes()
        index = self.offset_index
        index._drop_entries(bisect.bisect_left(index.positions, position))
        self.size = position
        self.flushed_size = 0  # the cut (and the data before it) is synced again
        self._torn = index.torn = self.time_index.torn = True
        # Walk from the last index entry left to find the new end offset and max timestamp.
        start_offset, start = index.lookup_position(position)
        next_offset = start_offset
        since = 0
        max_ts, max_ts_offset = -1, -1
        for item in self._walk(start, start_offset, position):
            if isinstance(item, Damage):
                continue
            pos, h = item
            next_offset = h.next_offset
            since = pos + h.size - start
            if h.max_timestamp > max_ts:
                max_ts, max_ts_offset = h.max_timestamp, h.last_offset
        times = self.time_index
        times._drop_entries(bisect.bisect_left(times.relative_offsets,
                                               next_offset - self.base_offset))
        if times.last_timestamp > max_ts:
            max_ts, max_ts_offset = times.last_timestamp, times.last_offset
        self._max_timestamp, self._offset_of_max_timestamp = max_ts, max_ts_offset
        self._bytes_since_index = since
        self.next_offset = next_offset if position else self.base_offset
        if not position:
            self.rolling_timestamp = -1
        for pos in [p for p in self.damage if p >= position]:
            del self.damage[pos]
        self.repair()

    # ---- reads ----

    def _walk(
        self, position: int, expected: int, end: int | None = None, *,
        window: int = HEADER_WINDOW, known_end: bool = True,
    ) -> Iterator[tuple[int, BatchHeader] | Damage]:
        """scan.walk over this segment from a batch boundary holding offset `expected`:
        (position, header) per good batch, a Damage per damaged place (logged once)."""
        end = self.size if end is None else end
        if position >= end:
            return iter(())
        h = self.handle()
        return scan.walk(h.fd, position, expected, end, window=window, known=self.damage,
                         on_damage=self._report_damage,
                         next_boundary=self.offset_index.entry_after,
                         next_offset=self.next_offset if known_end else -1, pin=h)

    def _report_damage(self, damage: Damage) -> None:
        log.error("%s: damaged data in %s at %s; fetches of those offsets answer "
                  "CORRUPT_MESSAGE, the rest is served (`nerve log verify` lists every "
                  "damaged place)", self.directory.name, self.path.name, damage.describe())

    def iter_headers(
        self, position: int, end: int | None = None, window: int = HEADER_WINDOW
    ) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of each good batch from `position` (a batch boundary) to `end`,
        stepping over damaged places."""
        expected = None if position else self.base_offset
        if expected is None:
            h = self.handle()
            expected = read_header(os.pread(h.fd, BATCH_HEADER_SIZE, position)).base_offset
        for item in self._walk(position, expected, end, window=window):
            if not isinstance(item, Damage):
                yield item

    def find_batch(
        self, offset: int, *, strict: bool = False
    ) -> tuple[int, BatchHeader] | None:
        """The batch holding `offset` (or the first one after it): index lookup + header walk.

        strict (fetches): raise CorruptLogError when `offset` lies in a damaged place, and
        CRC-check the batch found if it is older than this process. Otherwise damage is
        stepped over."""
        if not self._indexes_loaded:
            self.load_indexes()
        start_offset, start = self.offset_index.lookup_entry(offset)
        for item in self._walk(start, start_offset):
            if isinstance(item, Damage):
                if strict and (offset < item.next_offset or item.next_offset < 0):
                    raise CorruptLogError(self.directory.name, self.path.name, item)
                continue
            pos, header = item
            if header.last_offset >= offset:
                if strict and pos < self.loaded_size and pos != self._crc_checked:
                    self._check_crc(pos, header)
                return pos, header
        return None

    def _check_crc(self, pos: int, header: BatchHeader) -> None:
        h = self.handle()
        if not scan.crc_ok(h.fd, pos, header):
            damage = Damage(pos, pos + header.size, header.base_offset, header.next_offset,
                            "CRC-32C mismatch")
            self.damage[pos] = damage
            self._report_damage(damage)
            raise CorruptLogError(self.directory.name, self.path.name, damage)
        self._crc_checked = pos

    def read(self, offset: int, max_bytes: int, min_one: bool) -> tuple[int, int] | None:
        """(position, size) of whole batches from the one holding `offset`, within max_bytes
        (or exactly one batch if the first is bigger and min_one); None past the end. Never
        reaches into a known damaged place: the next fetch starts there and gets the error."""
        found = self.find_batch(offset, strict=True)
        if found is None:
            return None
        pos, header = found
        end = self.size
        if self.damage:
            end = min([d.position for d in self.damage.values() if d.position > pos] + [end])
        if end - pos <= max_bytes:
            return pos, end - pos
        if header.size > max_bytes:
            return pos, header.size if min_one else 0
        # Unlike Kafka (which may end a fetch mid-batch), cut at a batch boundary: start the
        # walk from the last indexed boundary before the limit so it stays short.
        limit = pos + max_bytes
        boundary_offset, boundary = self.offset_index.lookup_position(limit)
        if boundary <= pos:
            boundary_offset, boundary = header.base_offset, pos
        for item in self._walk(boundary, boundary_offset, end):
            if isinstance(item, Damage):
                break
            p, h = item
            if p + h.size > limit:
                break
            boundary = p + h.size
        return pos, boundary - pos

    def largest_timestamp(self) -> int:
        """Retention's clock: the largest record timestamp, else the file's mtime (Kafka)."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        try:
            return int(os.stat(self.path).st_mtime * 1000)
        except FileNotFoundError:
            return -1

    # ---- recovery and index rebuilds ----

    def _reset_from_headers(
        self, batches: list[tuple[int, BatchHeader]], next_offset: int | None = None
    ) -> None:
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
        if next_offset is None:
            next_offset = batches[-1][1].next_offset if batches else self.base_offset
        self.next_offset = next_offset
        self.rolling_timestamp = batches[0][1].max_timestamp if batches else -1

    def rebuild_indexes(self) -> None:
        """Indexes are caches: rebuild both from the batch headers of the log (trusted data:
        damage is stepped over, except a damaged tail of the last segment, which is cut)."""
        self.offset_index.rewrite([])  # no stale entries to bound resync searches
        batches: list[tuple[int, BatchHeader]] = []
        next_offset = self.next_offset if self.sealed else None  # known from the next segment
        for item in self._walk(0, self.base_offset, window=RECOVERY_CHUNK,
                               known_end=self.sealed):
            if isinstance(item, Damage):
                if item.next_offset < 0:
                    self._truncate(item.position, "damaged tail")
                    break
            else:
                batches.append(item)
        self._reset_from_headers(batches, next_offset)

    def _truncate(self, position: int, why: str) -> int:
        size = self.size
        if size > position:
            log.warning("%s: truncated segment %d to %d bytes, dropped %d of %d bytes (%s)",
                        self.directory.name, self.base_offset, position, size - position, size,
                        why)
            os.truncate(self.path, position)
            self.flushed_size = 0  # the truncation (and maybe the data) is not durable yet
        self.size = position
        for pos in [p for p in self.damage if p >= position]:
            del self.damage[pos]
        return size - position

    def _trusted_prefix(
        self, from_offset: int
    ) -> tuple[list[tuple[int, BatchHeader]], int, int]:
        """Headers of the batches below `from_offset` (fsynced: damage there is stepped over,
        never truncated), and the (position, offset) where validation starts."""
        batches: list[tuple[int, BatchHeader]] = []
        # Damage is reported only when kept: a torn tail is cut by the validation instead.
        h = self.handle()
        for item in scan.walk(h.fd, 0, self.base_offset, self.size,
                              window=RECOVERY_CHUNK, next_boundary=self.offset_index.entry_after,
                              next_offset=self.next_offset if self.sealed else -1):
            if isinstance(item, Damage):
                if item.next_offset < 0:  # nothing good after it: validate (cut) from there
                    return batches, item.position, item.first_offset
                self.damage[item.position] = item
                self._report_damage(item)
                if item.next_offset > from_offset:
                    return batches, item.end, item.next_offset
                continue
            pos, h = item
            if h.base_offset >= from_offset:
                return batches, pos, h.base_offset
            batches.append(item)
        end = batches[-1][0] + batches[-1][1].size if batches else 0
        return batches, end, batches[-1][1].next_offset if batches else self.base_offset

    def recover(self, from_offset: int | None = None) -> int:
        """Validate every batch from `from_offset` (default: the start) on, CRC included,
        truncate at the first bad or torn one, rebuild the indexes. Returns the number of
        bytes truncated."""
        fh = self.file.handle()
        size = self.size = os.fstat(fh.fd).st_size
        batches: list[tuple[int, BatchHeader]] = []
        expected = self.base_offset
        pos = 0
        if from_offset is not None and from_offset > self.base_offset:
            batches, pos, expected = self._trusted_prefix(from_offset)
        want = RECOVERY_CHUNK
        while pos < size:
            buf = read_all(fh.fd, pos, want)
            n, headers = valid_prefix(buf)
            broken = False
            for h in headers:
                if h.base_offset < expected:  # a CRC-valid batch in the wrong place (a
                    # cleaned segment has gaps: a higher base offset is fine)
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
        truncated = self._truncate(pos, "torn or corrupt batch")
        self.truncated_at_load = truncated > 0
        self.flushed_size = 0
        # `expected` also covers damage that runs to the end of a sealed segment.
        self._reset_from_headers(batches, expected)
        return truncated

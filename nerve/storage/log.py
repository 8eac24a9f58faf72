"""PartitionLog: one partition's segments, offsets, retention and flush state (Kafka's
UnifiedLog + LogLoader, single node: the high watermark is the log end offset).

Owned by the event loop: every method is a plain synchronous call made on the loop, except
that a FlushToken's `run` (the fsyncs) may execute in a worker thread; `begin_flush` and
`complete_flush` bracket it on the loop. `flush()` does all three in the calling thread.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nerve.config import TopicConfig
from nerve.protocol.records import (
    BatchHeader,
    read_header,
    set_base_offset,
    set_log_append_time,
)
from nerve.storage import timestamps
from nerve.storage.cleaner_io import complete_swaps
from nerve.storage.errors import (
    CorruptLogError,
    KafkaStorageError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
)
from nerve.storage.files import (
    DELETED_SUFFIX,
    INDEX_SUFFIX,
    LOG_START_OFFSET_FILE,
    LOG_SUFFIX,
    SNAPSHOT_SUFFIX,
    TIME_INDEX_SUFFIX,
    TMP_SUFFIX,
    fsync_dir,
    fsync_file,
    fsync_path,
    parse_offset,
    pread_into,
    read_all,
    snapshot_path,
    unlink_quietly,
    write_file_atomic,
)
from nerve.storage.handles import CachedFile, FileHandle, HandleCache, shared_cache
from nerve.storage.producer_state import ProducerStateEntry, ProducerStateManager
from nerve.storage.reaper import SegmentReaper
from nerve.storage.segment import LogSegment
from nerve.storage.txn_index import TXN_INDEX_SUFFIX, PartitionTxnState, marker_batch

log = logging.getLogger("nerve.storage")

_INT32_MAX = 0x7FFFFFFF
_SCAN_WINDOW = 64 * 1024
# A failure burst ends with the first append that succeeds this long after the last failure.
FAULT_QUIET_MS = 1000


@dataclass(frozen=True)
class AppendInfo:
    base_offset: int
    last_offset: int
    log_append_time: int  # -1 for CreateTime topics
    log_start_offset: int


@dataclass(frozen=True, slots=True)
class FileRegion:
    """Bytes of one segment file, for zero-copy send (os.sendfile from `open().fd`).

    Holds the file, not a descriptor: a fetch answer of thousands of partitions waiting to be
    sent pins none; the sender opens each region's file in turn (see handles.py). A deleted
    segment stays readable for file.delete.delay.ms.
    """

    file: CachedFile
    position: int
    size: int

    def open(self) -> FileHandle:
        """The file's handle; keep it (not only its fd) while the descriptor is in use."""
        return self.file.handle()

    def read_bytes(self) -> bytes:
        h = self.open()
        return read_all(h.fd, self.position, self.size)

    def read_into(self, view: memoryview) -> None:
        """Fill `view` (exactly `size` bytes) with the region; never a short answer."""
        h = self.open()
        got = pread_into(h.fd, self.position, view[: self.size])
        if got < self.size:
            raise EOFError(f"segment file ended {self.size - got} bytes before the region")


@dataclass(frozen=True)
class FetchSlice:
    regions: tuple[FileRegion, ...]  # empty when nothing to return
    size: int  # total bytes

    def read_bytes(self) -> bytes:
        return b"".join(r.read_bytes() for r in self.regions)


EMPTY_SLICE = FetchSlice((), 0)


@dataclass
class FlushToken:
    """What one flush covers, captured on the loop; `run` is the blocking part."""

    log: PartitionLog
    end_offset: int
    appended_messages: int
    segments: list[tuple[LogSegment, int, bool]]  # (segment, size covered, sync its indexes)
    files: list[Path] = field(default_factory=list)
    dir_version: int = 0
    sync_dir: bool = False

    def run(self) -> None:
        for seg, size, sync_indexes in self.segments:
            if size > seg.flushed_size:
                try:
                    # The cached handle when there is one, else a descriptor of our own for
                    # the fsync: a round of thousands of partitions holds one at a time.
                    h = seg.file.peek()
                    if h is not None:
                        os.fsync(h.fd)
                    else:
                        fsync_file(seg.path)
                except OSError:
                    if not seg.retired:  # a segment deleted meanwhile needs no durability
                        raise
            if sync_indexes:
                seg.offset_index.sync()
                seg.time_index.sync()
        for path in self.files:
            fsync_path(path)
        if self.sync_dir:
            fsync_dir(self.log.directory)


class PartitionLog:
    def __init__(
        self,
        directory: Path,
        topic: str,
        partition: int,
        config: TopicConfig,
        *,
        clean: bool = False,
        recovery_point: int | None = None,
        reaper: SegmentReaper | None = None,
        clock: Callable[[], float] = time.time,
        handles: HandleCache | None = None,
    ) -> None:
        """Open (or create) the partition in `directory`.

        clean=True trusts the files (the broker stopped cleanly); otherwise the data from
        `recovery_point` on (all of it when None) is validated and truncated at the first
        torn or corrupt batch. Below the recovery point everything was fsynced: it is
        trusted, and damage found there is reported and stepped over, never truncated.
        """
        self.directory = Path(directory)
        self.topic = topic
        self.partition = partition
        self.config = config  # assignable: later rolls and retention use the new one
        self.clock = clock
        self._own_reaper = reaper is None
        self.reaper = reaper if reaper is not None else SegmentReaper(clock)
        self.handles = handles if handles is not None else shared_cache()
        self.segments: list[LogSegment] = []
        self._bases: list[int] = []
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.recovery_point = 0
        self.last_flush_ms = self._now_ms()
        self._appended_messages = 0
        # Called with this log whenever it gets something to flush (the LogManager's flush
        # policy then looks at this log only, not at every partition every tick).
        self.on_dirty: Callable[[PartitionLog], None] | None = None
        self._flushed_messages = 0
        self._size = 0
        self._dir_version = 0  # bumped when a file appears in the directory
        self._dir_synced = 0
        self._lso_file_dirty = False
        self._needs_sync = False  # a fault truncation waits to be fsynced
        # Storage faults (see _storage_fault): the current burst, for one log line per burst.
        self.truncations = 0  # fault truncations: an append made before one is not durable
        self._repair_to: int | None = None  # a fault truncation still to be done
        self._fault_since = -1
        self._fault_last_ms = -1
        self._faults_in_burst = 0
        self.closed = False
        self.producers = ProducerStateManager()
        self.txn = PartitionTxnState(self.directory)  # ongoing transactions, .txnindex
        self._snapshot_loaded: Path | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._load(clean, recovery_point)

    def __repr__(self) -> str:
        return f"PartitionLog({self.topic}-{self.partition})"

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def high_watermark(self) -> int:
        return self.log_end_offset

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def active_segment(self) -> LogSegment:
        return self.segments[-1]

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # ---- loading (Kafka's LogLoader) ----

    def _load(self, clean: bool, recovery_point: int | None) -> None:
        complete_swaps(self.directory)  # a cleaning pass a crash interrupted (cleaner_io.py)
        bases: list[int] = []
        snapshots: list[int] = []
        for entry in os.scandir(self.directory):
            name = entry.name
            offset = parse_offset(name)
            if name.endswith((DELETED_SUFFIX, TMP_SUFFIX)):
                unlink_quietly(Path(entry.path))  # retired before a crash / half-written
            elif offset is None:
                continue
            elif name.endswith(LOG_SUFFIX):
                bases.append(offset)
            elif name.endswith(SNAPSHOT_SUFFIX):
                snapshots.append(offset)
        bases.sort()
        base_set = set(bases)
        for entry in os.scandir(self.directory):  # indexes without a log are leftovers
            offset = parse_offset(entry.name)
            if (entry.name.endswith((INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX))
                    and offset is not None
                    and offset not in base_set):
                unlink_quietly(Path(entry.path))

        checkpoint = self._read_log_start_offset()
        interval = self.config.index_interval_bytes
        if not bases:
            start = checkpoint or 0
            self._add_segment(LogSegment.create(self.directory, start, interval, self._now_ms(),
                                                self.handles))
            self._dir_version += 1
        else:
            # Unclean stop: validate from the recovery point on (Kafka validates whole
            # segments from the one holding it, truncating fsynced data at bit rot there).
            rp = None if clean else (recovery_point or 0)
            for i, base in enumerate(bases):
                nxt = bases[i + 1] if i + 1 < len(bases) else None
                trusted = rp is None or (nxt is not None and nxt <= rp)
                self._add_segment(LogSegment.open(self.directory, base, interval,
                                                  next_offset=nxt,
                                                  recover_from=None if trusted else rp,
                                                  handles=self.handles))
            self._drop_after_gap()
            self.active_segment.activate()
        self._size = sum(s.size for s in self.segments)
        self.log_end_offset = self.active_segment.next_offset
        first = self.segments[0].base_offset
        self.log_start_offset = min(max(checkpoint or first, first), self.log_end_offset)
        if clean:
            self.recovery_point = self.log_end_offset
        else:
            self.recovery_point = min(recovery_point or 0, self.log_end_offset)
        self.txn.load_indexes(self._bases, self.log_end_offset)
        self._load_producer_state(snapshots)

    def _drop_after_gap(self) -> None:
        """Segments after a truncated one cannot be trusted: drop them. (A cleaned segment
        may end below the next one's base: gaps alone are no truncation.)"""
        for i in range(len(self.segments) - 1):
            seg, later = self.segments[i], self.segments[i + 1:]
            if seg.truncated_at_load and later[0].base_offset != seg.next_offset:
                log.warning("%s: dropped %d segment(s) from offset %d (%d bytes): they follow "
                            "a truncation at offset %d", self.name, len(later),
                            later[0].base_offset, sum(s.size for s in later), seg.next_offset)
                for s in later:
                    s.close()
                    for p in (s.path, s.offset_index.path, s.time_index.path):
                        unlink_quietly(p)
                del self.segments[i + 1:]
                del self._bases[i + 1:]
                return

    def _load_producer_state(self, snapshots: list[int]) -> None:
        # Newest snapshot not beyond the log end; then replay batch headers after it.
        scan_from = self.segments[0].base_offset
        for offset in sorted(snapshots, reverse=True):
            path = snapshot_path(self.directory, offset)
            if offset <= self.log_end_offset and self.producers.read_snapshot(path):
                scan_from = offset
                self.txn.restore_ongoing(self.producers.txn_ongoing)
                self._snapshot_loaded = path
                break
        for seg in self.segments:
            if seg.next_offset <= scan_from:
                continue
            start = 0
            if scan_from > seg.base_offset:
                found = seg.find_batch(scan_from)
                start = found[0] if found else seg.size
            for pos, header in seg.iter_headers(start, window=_SCAN_WINDOW):
                self.producers.load_header(header)
                if header.is_transactional:
                    self._replay_txn(seg, pos, header)

    def _replay_txn(self, seg: LogSegment, pos: int, header: BatchHeader) -> None:
        batch = None
        if header.is_control:
            h = seg.handle()
            batch = read_all(h.fd, pos, min(header.size, 4096))
            self.producers.load_marker(header.producer_id, header.producer_epoch,
                                       header.max_timestamp)
        self.txn.replay(header, batch, seg.base_offset)

    def _read_log_start_offset(self) -> int | None:
        try:
            return int((self.directory / LOG_START_OFFSET_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _add_segment(self, seg: LogSegment) -> None:
        self.segments.append(seg)
        self._bases.append(seg.base_offset)
        self.txn.add_segment(seg.base_offset)

    # ---- append ----

    def append(
        self, records: bytearray, headers: list[tuple[int, BatchHeader]], *, now_ms: int
    ) -> AppendInfo:
        """Append already-validated batches; assign offsets by patching them in place."""
        if not headers:
            raise ValueError("append needs at least one batch")
        if self._repair_to is not None:  # a fault truncation the disk refused so far
            try:
                self._truncate_to(self._repair_to)
            except OSError as e:
                raise self._storage_fault("truncation", e, now_ms) from None
        config = self.config
        stamp = config.log_append_time
        max_bytes = config.max_message_bytes
        producers = self.producers
        staged: dict[int, ProducerStateEntry] = {}
        plan = []
        txn_starts: list[tuple[int, int]] = []
        next_offset = first_offset = self.log_end_offset
        for pos, h in headers:
            if h.size > max_bytes:
                raise RecordTooLargeError(f"batch of {h.size} bytes exceeds max.message.bytes "
                                          f"{max_bytes}")
            base = next_offset
            last = base + h.last_offset_delta
            next_offset = last + 1
            max_ts = now_ms if stamp else h.max_timestamp
            if h.producer_id >= 0 and h.base_sequence >= 0 and not h.is_control:
                producers.check(staged, h, base, last, max_ts, stamp)
            plan.append((pos, base, last, max_ts, h.size))
            if h.is_transactional and not h.is_control:
                txn_starts.append((h.producer_id, base))

        # The disk work: any OSError leaves the log as it was (segment.append and _roll undo
        # their own writes; producer state and offsets only change below, after success).
        try:
            seg = self.active_segment
            if self._should_roll(seg, len(records), next_offset, plan[-1][3], now_ms):
                seg = self._roll(now_ms)
            for pos, base, *_ in plan:
                set_base_offset(records, pos, base)
                if stamp:
                    set_log_append_time(records, pos, now_ms)
            if seg.size == 0:
                seg.created_ms = now_ms  # a segment's age counts from its first batch
            seg.append(records, plan)
        except OSError as e:
            raise self._storage_fault("append", e, now_ms) from None
        if self._fault_since >= 0 and now_ms - self._fault_last_ms >= FAULT_QUIET_MS:
            log.info("%s: appends work again (%d failed storage operation(s) since %s)",
                     self.name, self._faults_in_burst,
                     time.strftime("%H:%M:%S", time.localtime(self._fault_since / 1000)))
            self._fault_since = -1
        if staged:
            producers.commit(staged)
        for pid, base in txn_starts:
            self.txn.on_data(pid, base)
        self.log_end_offset = next_offset
        self._size += len(records)
        self._appended_messages += next_offset - first_offset
        if self.on_dirty is not None:
            self.on_dirty(self)
        return AppendInfo(first_offset, next_offset - 1, now_ms if stamp else -1,
                          self.log_start_offset)

    def _should_roll(
        self, seg: LogSegment, size: int, next_offset: int, max_ts: int, now_ms: int
    ) -> bool:
        if seg.size == 0:
            return False
        config = self.config
        if seg.size + size > config.segment_bytes:
            return True
        # Kafka's segment.ms: record time since the segment's first batch, or wall time since
        # the segment was created when batches carry no timestamp.
        if seg.rolling_timestamp >= 0 and max_ts >= 0:
            waited = max_ts - seg.rolling_timestamp
        else:
            waited = now_ms - seg.created_ms
        if waited > config.segment_ms:
            return True
        if next_offset - 1 - seg.base_offset > _INT32_MAX:  # relative offsets are int32
            return True
        return seg.offset_index.full_bytes + 8 > config.get_int("segment.index.bytes")

    def _roll(self, now_ms: int) -> LogSegment:
        # The new segment exists before the active one is sealed: a roll that fails (no
        # space, no permission, no file descriptor) leaves the active segment writable and
        # removes what it created.
        seg = LogSegment.create(self.directory, self.log_end_offset,
                                self.config.index_interval_bytes, now_ms, self.handles)
        try:
            self.active_segment.seal()
        except OSError:
            seg.close()
            for path in (seg.path, seg.offset_index.path, seg.time_index.path):
                unlink_quietly(path)
            raise
        self._add_segment(seg)
        self._dir_version += 1
        return seg

    # ---- storage faults ----

    def _storage_fault(self, what: str, e: OSError, now_ms: int,
                       detail: str = "") -> KafkaStorageError:
        """Count a failed disk operation; log it once per burst (a burst ends with the first
        append that succeeds FAULT_QUIET_MS after the last failure)."""
        if self._fault_since < 0:
            self._fault_since = now_ms
            self._faults_in_burst = 0
            log.error("%s: %s failed: %s%s; the affected produce requests are answered "
                      "KAFKA_STORAGE_ERROR until the disk takes writes again (further "
                      "failures are not logged)", self.name, what, e, detail)
        self._faults_in_burst += 1
        self._fault_last_ms = now_ms
        return KafkaStorageError(f"{self.name}: {what} failed: {e.strerror or e}")

    def fail_flush(self, e: OSError) -> None:
        """An fsync (or opening a file to fsync it) failed. After a failed fsync the kernel
        may have dropped the dirty pages (fsyncgate): nothing written since the last good
        fsync can be trusted, so the log is cut back to its recovery point and the appends
        past it were never acknowledged (acks=all answers KAFKA_STORAGE_ERROR; acks=1
        records there are lost, as on a Kafka leader that fails)."""
        point = self.recovery_point
        self._storage_fault("fsync", e, self._now_ms(),
                            f"; truncating to offset {point} (the last fsynced), dropping "
                            f"offsets {point}..{self.log_end_offset - 1}")
        self.truncations += 1
        self._repair_to = point
        with contextlib.suppress(OSError):  # else retried by the next append
            self._truncate_to(point)

    def acknowledged(self, end_offset: int, truncations: int) -> bool:
        """Whether an append that ended at `end_offset` (exclusive), made when the log had
        seen `truncations` fault truncations, is durable now."""
        return self.truncations == truncations and self.recovery_point >= end_offset

    def _truncate_to(self, offset: int) -> None:
        """Drop everything from `offset` (a batch boundary) on: later segments go, the one
        holding it is cut, producer state is rebuilt. Raises OSError if the disk refuses;
        `_repair_to` then makes the next append try again first."""
        self._repair_to = offset
        self.log_end_offset = min(self.log_end_offset, offset)
        delay = self.config.get_int("file.delete.delay.ms")
        while len(self.segments) > 1 and self.segments[-1].base_offset >= offset:
            seg = self.segments[-1]
            seg.retire(seal=False)  # readers under way keep their handles
            self.segments.pop()
            self._bases.pop()
            self.reaper.schedule(seg.destroy, delay)
            self._dir_version += 1
        seg = self.active_segment
        if seg.sealed:
            seg.activate()
        if seg.next_offset > offset:
            found = seg.find_batch(offset)
            seg.truncate_to(found[0] if found else seg.size)
        self._size = sum(s.size for s in self.segments)
        self.log_end_offset = seg.next_offset
        self.log_start_offset = min(self.log_start_offset, self.log_end_offset)
        self.recovery_point = min(self.recovery_point, self.log_end_offset)
        self._flushed_messages = self._appended_messages
        self._needs_sync = True  # the cut itself is made durable by the next flush
        if self.on_dirty is not None:
            self.on_dirty(self)
        self.producers = ProducerStateManager()
        self._load_producer_state([o for e in os.scandir(self.directory)
                                   if e.name.endswith(SNAPSHOT_SUFFIX)
                                   and (o := parse_offset(e.name)) is not None])
        self._repair_to = None

    def roll(self, now_ms: int | None = None) -> None:
        """Start a new segment now (if the active one has data)."""
        if self.active_segment.size:
            self._roll(self._now_ms() if now_ms is None else now_ms)

    # ---- reads ----

    def read(self, offset: int, max_bytes: int, *, min_one: bool = True,
             upper: int | None = None) -> FetchSlice:
        """Whole batches from the one holding `offset`, up to max_bytes (at least one batch
        when min_one). Continues into later segments while room is left. `upper` (a batch
        boundary: the last stable offset for read_committed) is never read past."""
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside [{self.log_start_offset}, {self.log_end_offset}] "
                f"of {self.name}")
        if offset == self.log_end_offset or (upper is not None and offset >= upper):
            return EMPTY_SLICE
        i = max(bisect.bisect_right(self._bases, offset) - 1, 0)
        regions: list[FileRegion] = []
        total = 0
        while i < len(self.segments):
            seg = self.segments[i]
            try:
                found = seg.read(offset, max_bytes - total, min_one and not regions)
            except CorruptLogError:
                if not regions:
                    raise
                break  # answer what comes before the damage; the next fetch gets the error
            if found is not None:
                pos, size = found
                cut = False
                if upper is not None and upper < seg.next_offset:
                    stop = seg.find_batch(upper)
                    if stop is not None and stop[0] < pos + size:
                        size, cut = max(stop[0] - pos, 0), True
                if size == 0:
                    break
                regions.append(FileRegion(seg.file, pos, size))
                total += size
                if cut or pos + size < seg.size or total >= max_bytes:
                    break
            offset = seg.next_offset
            i += 1
        return FetchSlice(tuple(regions), total)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) for ListOffsets: the first record at or above the log start
        offset whose timestamp is >= target (record level, as Kafka; see timestamps.py)."""
        return timestamps.offset_for_timestamp(self.segments, timestamp_ms,
                                               self.log_start_offset)

    def max_timestamp(self) -> tuple[int, int]:
        """(offset, timestamp) for ListOffsets MAX_TIMESTAMP: the first record carrying the
        largest timestamp; (-1, -1) when empty."""
        return timestamps.max_timestamp(self.segments, self.log_start_offset)

    # ---- deletion ----

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: raise the log start offset; delete segments wholly below it."""
        if offset < 0 or offset > self.high_watermark:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside [0, {self.high_watermark}] of {self.name}")
        if offset <= self.log_start_offset:
            return self.log_start_offset
        # Renamed into place now (survives a process crash); fsynced by the next flush. The
        # new start offset only takes effect once its file is written.
        try:
            write_file_atomic(self.directory / LOG_START_OFFSET_FILE, f"{offset}\n".encode(),
                              durable=False)
        except OSError as e:
            raise KafkaStorageError(f"{self.name}: writing {LOG_START_OFFSET_FILE} failed: "
                                    f"{e.strerror or e}") from None
        self.log_start_offset = offset
        self._lso_file_dirty = True
        while len(self.segments) > 1 and self.segments[1].base_offset <= offset:
            self._delete_oldest()
        return offset

    def apply_retention(self, now_ms: int) -> int:
        """Delete the oldest segments by retention.ms, then by retention.bytes, stopping at the
        first that may stay (Kafka's order and predicates). Returns how many. As in Kafka,
        the active segment goes too once it qualifies (an empty one is rolled first, so the
        log start offset moves up to the log end offset). Only cleanup.policy `delete`."""
        config = self.config
        if "delete" not in (p.strip() for p in config.get("cleanup.policy").split(",")):
            return 0
        retention_ms, retention_bytes = config.retention_ms, config.retention_bytes
        deleted = 0
        if retention_ms >= 0:
            deleted += self._delete_oldest_while(
                lambda seg: now_ms - seg.largest_timestamp() > retention_ms, now_ms)
        if retention_bytes >= 0:
            deleted += self._delete_oldest_while(
                lambda seg: self._size - seg.size >= retention_bytes, now_ms)
        return deleted

    def _delete_oldest_while(self, expired: Callable[[LogSegment], bool], now_ms: int) -> int:
        deleted = 0
        while self.segments:
            oldest = self.segments[0]
            is_active = len(self.segments) == 1
            if (is_active and oldest.size == 0) or not expired(oldest):
                break
            if is_active:
                self._roll(now_ms)
            self._delete_oldest()
            deleted += 1
        return deleted

    def _delete_oldest(self) -> None:
        seg = self.segments.pop(0)
        self._bases.pop(0)
        self._size -= seg.size
        self.log_start_offset = max(self.log_start_offset, self.segments[0].base_offset)
        self.txn.drop_segment(seg.base_offset)
        seg.retire()
        self.reaper.schedule(seg.destroy, self.config.get_int("file.delete.delay.ms"))

    # ---- flush ----

    def unflushed_messages(self) -> int:
        return self._appended_messages - self._flushed_messages

    def needs_flush(self, now_ms: int) -> bool:
        """The flush.messages / flush.ms policy."""
        unflushed = self.unflushed_messages()
        if not unflushed:
            return self._needs_sync
        config = self.config
        return (unflushed >= config.flush_messages
                or now_ms - self.last_flush_ms >= config.flush_ms)

    def begin_flush(self) -> FlushToken | None:
        """Capture what is unflushed right now; None when everything is durable already."""
        segments = []
        for seg in reversed(self.segments):  # unflushed segments are always a suffix
            dirty = seg.flushed_size < seg.size
            sync_indexes = seg.sealed and not seg.indexes_flushed
            if dirty or sync_indexes:
                segments.append((seg, seg.size, sync_indexes))
            elif seg.sealed:
                break
        files = [self.directory / LOG_START_OFFSET_FILE] if self._lso_file_dirty else []
        # An empty log's new files need no durable entry yet: its first append syncs them.
        sync_dir = (self._dir_version > self._dir_synced and self._size > 0) or bool(files)
        if not segments and not files and not sync_dir:
            self._flushed_messages = self._appended_messages
            self.recovery_point = self.log_end_offset
            self._needs_sync = False
            return None
        return FlushToken(self, self.log_end_offset, self._appended_messages, segments, files,
                          self._dir_version, sync_dir)

    def complete_flush(self, token: FlushToken, now_ms: int | None = None) -> None:
        for seg, size, sync_indexes in token.segments:
            seg.flushed_size = max(seg.flushed_size, size)
            if sync_indexes:
                seg.indexes_flushed = True
        if token.files:
            self._lso_file_dirty = False
        self._dir_synced = max(self._dir_synced, token.dir_version)
        self._needs_sync = False
        self.recovery_point = max(self.recovery_point, token.end_offset)
        self._flushed_messages = max(self._flushed_messages, token.appended_messages)
        self.last_flush_ms = self._now_ms() if now_ms is None else now_ms

    def flush(self) -> None:
        """Blocking fsync of everything appended so far; records the recovery point."""
        token = self.begin_flush()
        if token is not None:
            token.run()
            self.complete_flush(token)
        else:
            self.last_flush_ms = self._now_ms()

    # ---- shutdown ----

    def close(self) -> None:
        """Flush, seal, snapshot producer state, close the files (blocking)."""
        if self.closed:
            return
        self.flush()
        active = self.active_segment
        active.seal(final_time_entry=False)
        for index in (active.offset_index, active.time_index):
            if index.dirty:
                index.sync()
        self.txn.sync()
        self._write_producer_snapshot()
        for seg in self.segments:
            seg.close()
        self.closed = True
        if self._own_reaper:
            self.reaper.run_all_now()

    def _write_producer_snapshot(self) -> None:
        # Not fsynced (one fsync per partition made a clean stop of thousands of partitions
        # take minutes): a snapshot lost to a power cut reads as unusable, and the state is
        # then rebuilt from the (fsynced) log's batch headers instead.
        path = snapshot_path(self.directory, self.log_end_offset)
        if path == self._snapshot_loaded and not self.producers.changed:
            return  # nothing appended since the snapshot this log was loaded from
        self.producers.write_snapshot(path, txn_ongoing=self.txn.ongoing, durable=False)
        for entry in os.scandir(self.directory):
            if entry.name.endswith(SNAPSHOT_SUFFIX) and entry.path != str(path):
                unlink_quietly(Path(entry.path))

    def retire_all(self) -> list[LogSegment]:
        """Close for topic deletion: seal the segments but keep their read fds open for
        in-flight sends; the caller destroys them later (in a thread)."""
        for seg in self.segments:
            seg.seal()
            seg.file.retire()  # not cached any more; late readers open it by name
            seg.retired = True  # a concurrent fsync round may then find the file gone
        self.closed = True
        return list(self.segments)

    # ---- transactions (the marker writes and the LSO; state in txn_index.py)

    @property
    def last_stable_offset(self) -> int:
        return max(self.txn.lso(self.high_watermark), self.log_start_offset)

    def append_marker(self, producer_id: int, epoch: int, commit: bool, *,
                      coordinator_epoch: int = 0, now_ms: int) -> int:
        """Write a COMMIT or ABORT control batch for `producer_id`; returns its offset."""
        batch = bytearray(marker_batch(producer_id, epoch, commit, coordinator_epoch, now_ms))
        info = self.append(batch, [(0, read_header(batch))], now_ms=now_ms)
        self.producers.load_marker(producer_id, epoch, now_ms)
        self.txn.on_marker(producer_id, info.base_offset, commit,
                           self.active_segment.base_offset, self.high_watermark)
        return info.base_offset

    def producer_state(self) -> dict[int, ProducerStateEntry]:
        return self.producers.producers

    def remove_expired_producers(self, now_ms: int, expiration_ms: int) -> int:
        """producer.id.expiration.ms: producers of an open transaction here are kept."""
        return self.producers.remove_expired(now_ms, expiration_ms, self.txn.ongoing)

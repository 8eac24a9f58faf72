"""The record-level half of the log cleaner (Kafka's Cleaner): runs in a worker process.

`clean(task)` reads the inactive segments named in a `CleanTask`, builds the offset map of the
dirty section (latest offset per key), and rewrites the segments in groups of up to
segment.bytes into `<base>.log.cleaned` files (with their indexes), fsynced; it never touches
the live files. The broker's event loop then renames them `.swap`, retires the old segments
and renames the swaps into place (cleaner.py). `complete_swaps` finishes or undoes that at
load after a crash, as Kafka's LogLoader does.

Kafka's rules, per batch: records of aborted transactions go; a key's record stays only if it
is the latest in the map; a tombstone (null value) or the marker of a transaction whose data
is all gone stays until its batch's delete horizon (set to now + delete.retention.ms by the
pass that first keeps it, in baseTimestamp with attribute bit 0x40, KIP-534); keyless records
go; the last batch of each producer stays (empty if need be) so its sequence state survives.
A batch that loses nothing is copied byte for byte; one that loses records is rebuilt with its
own codec, base and last offset (the last sequence) kept. A batch that fails its CRC is copied
unchanged (the fetch that reaches it answers CORRUPT_MESSAGE, as before).
Batch-level work is C (crc32c, codecs); the per-record loop is Python, off the broker's loop.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nerve.protocol.compression import XERIAL_MAGIC, decompress
from nerve.protocol.records import (
    BATCH_HEADER_SIZE,
    COMPRESSION_MASK,
    CRC_OFFSET,
    LOG_OVERHEAD,
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    _read_varint,
    _write_varint,
    compute_crc,
    read_header,
)
from nerve.storage.files import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    fsync_dir,
    parse_offset,
    unlink_quietly,
    write_all,
)
from nerve.storage.txn_index import ABORT, COMMIT, TXN_INDEX_SUFFIX, marker_type

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
DELETE_HORIZON_MASK = 0x40  # Kafka's hasDeleteHorizonMs attribute bit
READ_CHUNK = 4 * 1024 * 1024
_WRITE_CHUNK = 1024 * 1024
_HEADER = struct.Struct(">qiibIhiqqqhii")
_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")
_TXN_ENTRY = struct.Struct(">hqqqq")
_XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024
PAUSE_ENV = "NERVE_CLEANER_PAUSE_AT"  # test hook: pause a pass at this step (see pause())


def pause(step: str, what: str) -> bool:
    """Test hook: with NERVE_CLEANER_PAUSE_AT=step, say so and stop here (a kill -9 test
    kills the broker while it waits; the worker sleeps, the broker's loop awaits
    `paused()`). Never set outside tests."""
    if os.environ.get(PAUSE_ENV) != step:
        return False
    print(f"nerve cleaner paused at {step} ({what})", file=sys.stderr, flush=True)
    if step == "writing":
        time.sleep(3600)
    return True


@dataclass(frozen=True)
class SegmentRef:
    base: int
    path: str
    size: int
    next_offset: int  # the next segment's base offset: where this one's offsets end


@dataclass
class CleanTask:
    name: str
    directory: str
    segments: list[SegmentRef]  # inactive segments from the log start to the uncleanable one
    first_dirty: int  # the offset map starts here
    first_uncleanable: int  # and ends before here
    aborted: list[tuple[int, int, int, int]]  # (pid, first, last, lso) by first offset
    last_data_offsets: dict[int, int]  # producer id -> last offset of its last data batch
    now_ms: int
    delete_retention_ms: int
    max_segment_bytes: int
    index_interval_bytes: int
    max_index_bytes: int
    map_capacity: int  # offset map entries (from log.cleaner.dedupe.buffer.size)
    io_bytes_per_second: float


@dataclass
class CleanedGroup:
    base: int
    replaces: list[int]  # base offsets of the old segments
    size: int
    old_size: int
    aborted: list[tuple[int, int, int, int]]


@dataclass
class CleanResult:
    groups: list[CleanedGroup] = field(default_factory=list)
    map_end: int = 0  # the next pass's first dirty offset
    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_kept: int = 0
    seconds: float = 0.0


class Throttler:
    """log.cleaner.io.max.bytes.per.second: sleep while reads and writes run ahead."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.done = 0

    def tick(self, nbytes: int) -> None:
        self.done += nbytes
        if self.rate <= 0 or self.rate >= 1e300:
            return
        ahead = self.done / self.rate - (time.monotonic() - self.start)
        if ahead > 0.01:
            time.sleep(ahead)


# ---- codecs (the batch's own codec, as Kafka recompresses) ----

def compress(codec: int, data: bytes) -> bytes:
    if codec == 1:
        return gzip.compress(data, compresslevel=6, mtime=0)
    import cramjam

    if codec == 2:  # xerial framing, as Kafka's Java producer and broker write it
        out = bytearray(_XERIAL_HEADER)
        for i in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(data[i:i + _XERIAL_BLOCK]))
            out += struct.pack(">i", len(block)) + block
        return bytes(out)
    if codec == 3:
        return bytes(cramjam.lz4.compress(data))
    if codec == 4:
        return bytes(cramjam.zstd.compress(data, 3))
    raise ValueError(f"unknown compression codec {codec}")


# ---- reading segment files ----

def iter_file_batches(path: str, size: int, throttle: Throttler | None = None):
    """(position, header, batch bytes) of each batch of a segment file, read in chunks.
    Stops at the first place that is not a whole v2 batch (a torn or damaged tail)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        buf = b""
        buf_start = 0
        while pos + BATCH_HEADER_SIZE <= size:
            off = pos - buf_start
            if off + BATCH_HEADER_SIZE > len(buf):
                buf = os.pread(fd, min(READ_CHUNK, size - pos), pos)
                buf_start, off = pos, 0
                if throttle is not None:
                    throttle.tick(len(buf))
            h = read_header(buf, off)
            if h.magic != 2 or h.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD \
                    or pos + h.size > size:
                return
            if off + h.size > len(buf):
                buf = os.pread(fd, max(h.size, min(READ_CHUNK, size - pos)), pos)
                buf_start, off = pos, 0
                if throttle is not None:
                    throttle.tick(len(buf))
            yield pos, h, memoryview(buf)[off:off + h.size]
            pos += h.size
    finally:
        os.close(fd)


def _records_bytes(h: BatchHeader, batch: memoryview) -> bytes:
    body = batch[BATCH_HEADER_SIZE:]
    return decompress(h.compression, body) if h.compression else bytes(body)


def _varint(body: bytes, p: int) -> tuple[int, int]:
    b = body[p]
    if b < 0x80:  # one byte: most lengths and deltas (inlined below where it counts)
        return (b >> 1) ^ -(b & 1), p + 1
    return _read_varint(body, p)


def iter_raw_records(h: BatchHeader, body: bytes):
    """(offset, timestamp, key, has value, attributes byte, the record's bytes after its
    timestamp delta) of each record."""
    pos = 0
    base_offset, base_ts = h.base_offset, h.base_timestamp
    for _ in range(h.records_count):
        length, pos = _varint(body, pos)
        end = pos + length
        ts_delta, p = _varint(body, pos + 1)
        rest = p
        b = body[p]
        if b < 0x80:
            off_delta, p = (b >> 1) ^ -(b & 1), p + 1
        else:
            off_delta, p = _read_varint(body, p)
        b = body[p]
        if b < 0x80:
            klen, p = (b >> 1) ^ -(b & 1), p + 1
        else:
            klen, p = _read_varint(body, p)
        key = None if klen < 0 else body[p:p + klen]
        p += max(klen, 0)
        yield base_offset + off_delta, base_ts + ts_delta, key, body[p] != 1, \
            body[pos:pos + 1], body[rest:end]
        pos = end


def iter_keys(h: BatchHeader, body: bytes):
    """(offset, key) of each record: the offset map's lean walk."""
    pos = 0
    base_offset = h.base_offset
    for _ in range(h.records_count):
        b = body[pos]
        if b < 0x80:
            length, pos = (b >> 1) ^ -(b & 1), pos + 1
        else:
            length, pos = _read_varint(body, pos)
        end = pos + length
        _, p = _varint(body, pos + 1)
        off_delta, p = _varint(body, p)
        klen, p = _varint(body, p)
        if klen >= 0:
            yield base_offset + off_delta, body[p:p + klen]
        pos = end


# ---- the offset map (Kafka's SkimpyOffsetMap: here a dict of key -> latest offset) ----

class _TxnTracker:
    """Kafka's CleanedTransactionMetadata: which batches belong to aborted transactions,
    and which markers close a transaction none of whose batches remain."""

    def __init__(self, aborted: list[tuple[int, int, int, int]]) -> None:
        self.pending = sorted(aborted, key=lambda e: e[1])
        self.i = 0
        self.ongoing_aborted: dict[int, list] = {}  # pid -> [entry, saw a batch]
        self.ongoing_committed: set[int] = set()

    def _consume_upto(self, offset: int) -> None:
        while self.i < len(self.pending) and self.pending[self.i][1] <= offset:
            e = self.pending[self.i]
            self.ongoing_aborted[e[0]] = [e, False]
            self.i += 1

    def on_batch(self, h: BatchHeader) -> bool:
        """True when the batch's records can go (it belongs to an aborted transaction)."""
        self._consume_upto(h.last_offset)
        if not h.is_transactional:
            return False
        state = self.ongoing_aborted.get(h.producer_id)
        if state is not None:
            state[1] = True
            return True
        self.ongoing_committed.add(h.producer_id)
        return False

    def on_marker(self, h: BatchHeader, batch: memoryview) -> bool:
        """True when the marker may go: its transaction has no batch left before it."""
        self._consume_upto(h.last_offset)
        kind = marker_type(bytes(batch[:4096]))
        if kind == ABORT:
            state = self.ongoing_aborted.pop(h.producer_id, None)
            return not (state is not None and state[1])
        if kind == COMMIT:
            if h.producer_id in self.ongoing_committed:
                self.ongoing_committed.discard(h.producer_id)
                return False
            return True
        return False


def build_offset_map(task: CleanTask, result: CleanResult, throttle: Throttler) -> dict:
    """Latest offset per key of the dirty section; stops (at a batch) when the map holds
    map_capacity keys. Sets result.map_end to the offset after the last one mapped."""
    omap: dict[bytes, int] = {}
    capacity = max(task.map_capacity, 1)
    start, stop = task.first_dirty, task.first_uncleanable
    txn = _TxnTracker(task.aborted)
    mapped_to = start
    for seg in task.segments:
        if seg.next_offset <= start:
            continue
        if seg.base >= stop:
            break
        for _, h, batch in iter_file_batches(seg.path, seg.size, throttle):
            if h.last_offset < start:
                if h.is_control:
                    txn.on_marker(h, batch)
                else:
                    txn.on_batch(h)
                continue
            if h.base_offset >= stop:
                break
            if h.is_control:
                txn.on_marker(h, batch)
                mapped_to = h.next_offset
                continue
            if txn.on_batch(h):  # aborted: nothing to map
                mapped_to = h.next_offset
                continue
            if len(omap) + h.records_count > capacity and omap:
                result.map_end = mapped_to
                return omap
            try:
                for offset, key in iter_keys(h, _records_bytes(h, batch)):
                    if offset >= start:
                        omap[key] = offset
            except Exception:  # an unreadable batch maps nothing; the rewrite copies it
                pass
            mapped_to = h.next_offset
        mapped_to = max(mapped_to, min(seg.next_offset, stop))
    result.map_end = max(mapped_to, start)
    return omap


# ---- rewriting ----

def _build_batch(h: BatchHeader, records: list, horizon: int) -> bytes:
    """A v2 batch of the kept records with the original base/last offset, producer fields
    and codec; baseTimestamp is the delete horizon when one is set (KIP-534)."""
    log_append = bool(h.attributes & TIMESTAMP_TYPE_MASK)
    base_ts = horizon if horizon >= 0 else records[0][1]
    max_ts = h.max_timestamp if log_append else max(r[1] for r in records)
    body = bytearray()
    for _, ts, _, _, attrs, rest in records:
        rec = bytearray(attrs)
        _write_varint(rec, ts - base_ts)
        rec += rest
        _write_varint(body, len(rec))
        body += rec
    codec = h.compression
    payload = compress(codec, bytes(body)) if codec else body
    attributes = h.attributes & ~DELETE_HORIZON_MASK
    if horizon >= 0:
        attributes |= DELETE_HORIZON_MASK
    total = BATCH_HEADER_SIZE + len(payload)
    out = bytearray(total)
    _HEADER.pack_into(out, 0, h.base_offset, total - LOG_OVERHEAD, h.partition_leader_epoch,
                      2, 0, attributes, h.last_offset_delta, base_ts, max_ts, h.producer_id,
                      h.producer_epoch, h.base_sequence, len(records))
    out[BATCH_HEADER_SIZE:] = payload
    struct.pack_into(">I", out, CRC_OFFSET, compute_crc(out, 0, total))
    return bytes(out)


def _empty_batch(h: BatchHeader) -> bytes:
    """Kafka's empty batch header: keeps a producer's last sequence when all its records
    are gone (RETAIN_EMPTY)."""
    attributes = h.attributes & ~(COMPRESSION_MASK | DELETE_HORIZON_MASK)
    out = bytearray(BATCH_HEADER_SIZE)
    _HEADER.pack_into(out, 0, h.base_offset, BATCH_HEADER_SIZE - LOG_OVERHEAD,
                      h.partition_leader_epoch, 2, 0, attributes, h.last_offset_delta,
                      h.max_timestamp, h.max_timestamp, h.producer_id, h.producer_epoch,
                      h.base_sequence, 0)
    struct.pack_into(">I", out, CRC_OFFSET, compute_crc(out, 0, BATCH_HEADER_SIZE))
    return bytes(out)


def _horizon(h: BatchHeader) -> int:
    return h.base_timestamp if h.attributes & DELETE_HORIZON_MASK else -1


def filter_batch(h: BatchHeader, batch: memoryview, omap: dict, txn: _TxnTracker,
                 task: CleanTask, result: CleanResult) -> bytes | memoryview | None:
    """What of one batch stays: the batch itself, a rebuilt one, an empty header, or None."""
    now = task.now_ms
    horizon = _horizon(h)
    if h.is_control:
        discardable = txn.on_marker(h, batch)
        discard = discardable and 0 <= horizon <= now
        marker_for_empty_txn = discardable
    else:
        discard = txn.on_batch(h)
        marker_for_empty_txn = False
    retain_empty = h.producer_id >= 0 and task.last_data_offsets.get(h.producer_id) == \
        h.last_offset
    if compute_crc(batch, 0, h.size) != h.crc:
        return batch  # damaged: left as it is
    try:
        records = list(iter_raw_records(h, _records_bytes(h, batch)))
    except Exception:
        return batch  # unreadable records: left as they are
    result.records_read += len(records)
    tombstones = False
    if discard:
        kept = []
    elif h.is_control:
        kept = records
    else:
        kept = []
        for r in records:
            offset, _, key, has_value = r[0], r[1], r[2], r[3]
            if key is None or offset < omap.get(key, -1):
                continue
            if not has_value:
                if 0 <= horizon <= now:
                    continue  # a tombstone past its delete horizon
                tombstones = True
            kept.append(r)
    result.records_kept += len(kept)
    set_horizon = (tombstones or marker_for_empty_txn) and horizon < 0
    if kept and len(kept) == len(records) and not set_horizon:
        return batch
    if kept:
        new_horizon = now + task.delete_retention_ms if set_horizon else horizon
        return _build_batch(h, kept, new_horizon)
    if retain_empty:
        return _empty_batch(h)
    return None


class _SegmentWriter:
    """One `.cleaned` segment: its log and index files, written in Kafka's formats."""

    def __init__(self, directory: str, base: int, interval: int, throttle: Throttler) -> None:
        self.dir = Path(directory)
        self.base = base
        self.interval = interval
        self.throttle = throttle
        self.path = self.dir / f"{base:020d}{LOG_SUFFIX}{CLEANED_SUFFIX}"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.buf = bytearray()
        self.size = 0
        self.offsets: list[tuple[int, int]] = []
        self.times: list[tuple[int, int]] = []
        self.since = 0
        self.max_ts, self.max_ts_offset = -1, -1
        self.markers: set[int] = set()

    def append(self, data: bytes | memoryview) -> None:
        h = read_header(data)
        if h.max_timestamp > self.max_ts:
            self.max_ts, self.max_ts_offset = h.max_timestamp, h.last_offset
        if self.since > self.interval:
            self.offsets.append((h.base_offset - self.base, self.size))
            if not self.times or self.max_ts > self.times[-1][0]:
                self.times.append((self.max_ts, self.max_ts_offset - self.base))
            self.since = 0
        self.since += h.size
        if h.is_control:
            self.markers.add(h.base_offset)
        self.buf += data
        self.size += h.size
        if len(self.buf) >= _WRITE_CHUNK:
            self._drain()

    def _drain(self) -> None:
        write_all(self.fd, self.buf)
        self.throttle.tick(len(self.buf))
        self.buf.clear()

    def finish(self, aborted: list[tuple[int, int, int, int]]) -> None:
        """Write the rest, the indexes (final time entry as on a roll) and fsync them all."""
        self._drain()
        os.fsync(self.fd)
        os.close(self.fd)
        if self.max_ts >= 0 and (not self.times or self.max_ts > self.times[-1][0]):
            self.times.append((self.max_ts, self.max_ts_offset - self.base))
        files = [
            (INDEX_SUFFIX, b"".join(_OFFSET_ENTRY.pack(*e) for e in self.offsets)),
            (TIME_INDEX_SUFFIX, b"".join(_TIME_ENTRY.pack(*e) for e in self.times)),
            (TXN_INDEX_SUFFIX, b"".join(_TXN_ENTRY.pack(0, *e) for e in aborted)),
        ]
        for suffix, data in files:
            path = self.dir / f"{self.base:020d}{suffix}{CLEANED_SUFFIX}"
            if not data:
                continue
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def abandon(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def group_segments(segments: list[SegmentRef], max_bytes: int, max_index_bytes: int,
                   interval: int) -> list[list[SegmentRef]]:
    """Kafka's groupSegmentsBySize: consecutive segments whose sizes add up to at most
    segment.bytes (and whose offsets fit one segment's relative int32 range)."""
    groups: list[list[SegmentRef]] = []
    for seg in segments:
        g = groups[-1] if groups else None
        if g is not None:
            size = sum(s.size for s in g) + seg.size
            index = size // max(interval, 1) * 8
            if size <= max_bytes and index <= max_index_bytes \
                    and seg.next_offset - 1 - g[0].base <= 0x7FFFFFFF:
                g.append(seg)
                continue
        groups.append([seg])
    return groups


def clean(task: CleanTask) -> CleanResult:
    """One cleaning pass over one log's inactive segments (the worker process's job)."""
    started = time.monotonic()
    result = CleanResult()
    throttle = Throttler(task.io_bytes_per_second)
    omap = build_offset_map(task, result, throttle)
    to_clean = [s for s in task.segments if s.base < result.map_end]
    txn = _TxnTracker(task.aborted)
    aborted_by_marker = {e[2]: e for e in task.aborted}
    for group in group_segments(to_clean, task.max_segment_bytes, task.max_index_bytes,
                                task.index_interval_bytes):
        writer = _SegmentWriter(task.directory, group[0].base, task.index_interval_bytes,
                                throttle)
        try:
            for seg in group:
                for _, h, batch in iter_file_batches(seg.path, seg.size, throttle):
                    result.bytes_read += h.size
                    kept = filter_batch(h, batch, omap, txn, task, result)
                    if kept is not None:
                        writer.append(kept)
                if writer.size:
                    pause("writing", task.name)
            kept_aborted = [aborted_by_marker[m] for m in sorted(writer.markers)
                            if m in aborted_by_marker]
            writer.finish(kept_aborted)
        except BaseException:
            writer.abandon()
            remove_cleaned(Path(task.directory))
            raise
        result.bytes_written += writer.size
        result.groups.append(CleanedGroup(group[0].base, [s.base for s in group], writer.size,
                                          sum(s.size for s in group), kept_aborted))
    fsync_dir(Path(task.directory))
    result.seconds = time.monotonic() - started
    return result


# ---- files left by a crash (Kafka's LogLoader: .cleaned deleted, .swap completed) ----

def remove_cleaned(directory: Path) -> None:
    """Delete a pass's `.cleaned` files (a directory gone with its topic has none left)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.endswith(CLEANED_SUFFIX):
                unlink_quietly(Path(entry.path))


def _next_offset_of(path: Path) -> int | None:
    last = None
    for _, h, _ in iter_file_batches(str(path), os.stat(path).st_size):
        last = h
    return None if last is None else last.next_offset


def complete_swaps(directory: Path) -> bool:
    """At load, before the segments are read: `.cleaned` files are half-done work (deleted);
    a `.swap` log was complete and fsynced before it got that name, so the old segments it
    replaces (base offsets in [its base, its next offset)) go and it takes their place.
    Returns whether anything changed."""
    names = os.listdir(directory)
    changed = False
    for name in names:
        if name.endswith(CLEANED_SUFFIX):
            unlink_quietly(directory / name)
            changed = True
    swaps = sorted(n for n in names if n.endswith(SWAP_SUFFIX))
    if not swaps:
        return changed
    logs = sorted(o for n in names if n.endswith(LOG_SUFFIX)
                  and (o := parse_offset(n)) is not None)
    for name in swaps:
        if not name.endswith(LOG_SUFFIX + SWAP_SUFFIX):
            continue
        base = parse_offset(name)
        if base is None:
            continue
        path = directory / name
        end = _next_offset_of(path)
        end = base + 1 if end is None else end
        for old in logs:
            if base <= old < end:
                for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX):
                    if old != base or suffix == LOG_SUFFIX:
                        unlink_quietly(directory / f"{old:020d}{suffix}")
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX):
            if f"{base:020d}{suffix}{SWAP_SUFFIX}" not in names:
                unlink_quietly(directory / f"{base:020d}{suffix}")  # the old one's index
    swapped = {parse_offset(n) for n in swaps if n.endswith(LOG_SUFFIX + SWAP_SUFFIX)}
    for name in swaps:  # indexes first, each log last (see cleaner.py's swap order)
        if not name.endswith(LOG_SUFFIX + SWAP_SUFFIX):
            if parse_offset(name) in swapped:
                os.replace(directory / name, directory / name[:-len(SWAP_SUFFIX)])
            else:  # cannot happen with that order; an index without its log is no use
                unlink_quietly(directory / name)
    for name in swaps:
        if name.endswith(LOG_SUFFIX + SWAP_SUFFIX):
            os.replace(directory / name, directory / name[:-len(SWAP_SUFFIX)])
    fsync_dir(directory)
    return True


# ---- the worker process: `python -m nerve.storage.cleaner_worker <broker pid>` ----

def worker_main(parent: int) -> None:
    """Run CleanTasks read from stdin (4-byte length + pickle), answer each on stdout with
    ("ok", CleanResult) or ("error", text). Dies with the broker: a kill -9 of the broker
    must not leave a worker writing into its data dir."""
    import pickle
    import signal

    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        task = pickle.loads(stdin.read(int.from_bytes(head, "big")))
        try:
            answer: tuple[str, object] = ("ok", clean(task))
        except Exception as e:  # the broker logs it as one line and leaves the log as it was
            answer = ("error", f"{type(e).__name__}: {e}")
        data = pickle.dumps(answer)
        stdout.write(len(data).to_bytes(4, "big") + data)
        stdout.flush()


"""`nerve log dump PATH...` and `nerve log verify --data-dir DIR`: look into segment files.

`dump` prints what Kafka's kafka-dump-log (kafka.tools.DumpLogSegments) prints, line for line
for a well-formed .log, .index or .timeindex file (nerve's offset index holds each indexed
batch's BASE offset where Kafka's holds the last one). Damaged places get a `Damaged:` line
and the dump goes on at the next good batch.

`verify` reads every segment of every partition of a stopped broker's data dir: batch
structure, CRC-32C, offset continuity within and across segments, and both indexes against
the log. One line per problem (partition, file, position, what), exit 1 when there is any.

Both only read segment files. `verify` takes the data dir's lock (nerve/storage/lock.py) for
as long as it runs, so it refuses a running broker's data dir and no broker starts under it;
`dump` of a running broker's file works (as kafka-dump-log does) with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nerve.protocol.compression import decompress
from nerve.protocol.records import (
    ATTRIBUTES_OFFSET,
    BATCH_HEADER_SIZE,
    COMPRESSION_MASK,
    COMPRESSION_NAMES,
    BatchHeader,
    iter_records,
)
from nerve.storage import scan
from nerve.storage.files import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    index_path,
    parse_offset,
    read_all,
    time_index_path,
)
from nerve.storage.lock import LOCK_FILE, DataDirLock
from nerve.tools.base import ToolError

_DELETE_HORIZON_MASK = 0x40
_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")
_WINDOW = 1 << 20


# ---- dump ----


def dump(path: Path, print_data_log: bool, out: Callable[[str], None]) -> None:
    """Print one file the way kafka-dump-log does."""
    name = path.name
    base = parse_offset(name)
    if base is None:
        raise ToolError(f"{path}: not a segment file (expected a 20-digit base offset name)")
    out(f"Dumping {path}")
    if name.endswith(LOG_SUFFIX):
        _dump_log(path, base, print_data_log, out)
    elif name.endswith((TIME_INDEX_SUFFIX, INDEX_SUFFIX)):
        time_index = name.endswith(TIME_INDEX_SUFFIX)
        entries = list(_entries(path, _TIME_ENTRY if time_index else _OFFSET_ENTRY))
        if not entries:
            out(f"{path} is empty.")
        for a, b in entries:
            out(f"timestamp: {a} offset: {base + b}" if time_index
                else f"offset: {base + a} position: {b}")
    else:
        raise ToolError(f"{path}: not a .log, .index or .timeindex file")


def _entries(path: Path, entry: struct.Struct) -> Iterator[tuple[int, int]]:
    data = _read_file(path)
    whole = len(data) - len(data) % entry.size
    yield from entry.iter_unpack(data[:whole])


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ToolError(f"{path}: {e.strerror}") from None


def _dump_log(path: Path, base: int, print_data_log: bool, out: Callable[[str], None]) -> None:
    out(f"Log starting offset: {base}")
    with _open(path) as fd:
        size = os.fstat(fd).st_size
        for item in scan.walk(fd, 0, base, size, window=_WINDOW, known={}):
            if isinstance(item, scan.Damage):
                out(f"Damaged: {item.describe()}")
                continue
            pos, h = item
            data = read_all(fd, pos, h.size)
            valid = scan.crc_ok(fd, pos, h)
            out(_batch_line(pos, h, valid))
            if print_data_log:
                for line in _record_lines(h, data):
                    out(line)


@contextlib.contextmanager
def _open(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise ToolError(f"{path}: {e.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _bool(v: bool) -> str:
    return "true" if v else "false"


def _time_type(h: BatchHeader) -> str:
    return "LogAppendTime" if h.is_log_append_time else "CreateTime"


def _batch_line(pos: int, h: BatchHeader, valid: bool) -> str:
    horizon = (f"OptionalLong[{h.base_timestamp}]" if h.attributes & _DELETE_HORIZON_MASK
               else "OptionalLong.empty")
    codec = COMPRESSION_NAMES.get(h.compression, str(h.compression))
    return (f"baseOffset: {h.base_offset} lastOffset: {h.last_offset} count: {h.records_count} "
            f"baseSequence: {h.base_sequence} lastSequence: {h.last_sequence} "
            f"producerId: {h.producer_id} producerEpoch: {h.producer_epoch} "
            f"partitionLeaderEpoch: {h.partition_leader_epoch} "
            f"isTransactional: {_bool(h.is_transactional)} isControl: {_bool(h.is_control)} "
            f"deleteHorizonMs: {horizon} position: {pos} {_time_type(h)}: {h.max_timestamp} "
            f"size: {h.size} magic: {h.magic} compresscodec: {codec} crc: {h.crc} "
            f"isvalid: {_bool(valid)}")


def _record_lines(h: BatchHeader, batch: bytes) -> Iterator[str]:
    try:
        if h.compression:
            plain = bytearray(batch[:BATCH_HEADER_SIZE])
            attrs = h.attributes & ~COMPRESSION_MASK
            struct.pack_into(">h", plain, ATTRIBUTES_OFFSET, attrs)
            plain += decompress(h.compression, batch[BATCH_HEADER_SIZE:])
            batch = bytes(plain)
        records = list(iter_records(batch))
    except Exception as e:  # a corrupt batch (its CRC says so): say it, keep dumping
        yield f"| records unreadable: {e}"
        return
    for r in records:
        seq = -1 if h.base_sequence < 0 else (
            (h.base_sequence + r.offset - h.base_offset) & 0x7FFFFFFF)
        ts = h.max_timestamp if h.is_log_append_time else r.timestamp
        line = (f"| offset: {r.offset} {_time_type(h)}: {ts} "
                f"keySize: {-1 if r.key is None else len(r.key)} "
                f"valueSize: {-1 if r.value is None else len(r.value)} sequence: {seq} "
                f"headerKeys: [{','.join(k for k, _ in r.headers)}]")
        if h.is_control:
            line += _control(r.key, r.value)
        else:
            if r.key is not None:
                line += f" key: {r.key.decode('utf-8', errors='replace')}"
            if r.value is not None:
                line += f" payload: {r.value.decode('utf-8', errors='replace')}"
        yield line


def _control(key: bytes | None, value: bytes | None) -> str:
    if key is None or len(key) < 4:
        return " controlType: UNKNOWN"
    kind = struct.unpack_from(">h", key, 2)[0]
    if kind in (0, 1) and value is not None and len(value) >= 6:
        epoch = struct.unpack_from(">i", value, 2)[0]
        return f" endTxnMarker: {'ABORT' if kind == 0 else 'COMMIT'} coordinatorEpoch: {epoch}"
    return f" controlType: {kind}"


# ---- verify ----


@dataclass
class VerifyResult:
    partitions: int = 0
    segments: int = 0
    batches: int = 0
    problems: int = 0


def broker_running(data_dir: Path) -> bool:
    """Whether a broker holds the data dir's lock (checked without taking it)."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # drops our shared lock, if we got it
    return False


def partition_dirs(data_dir: Path) -> list[Path]:
    """Directories named <topic>-<partition> that hold segment files."""
    out = []
    for entry in sorted(data_dir.iterdir()):
        head, sep, tail = entry.name.rpartition("-")
        if entry.is_dir() and sep and head and tail.isdigit() and any(
                p.name.endswith(LOG_SUFFIX) and parse_offset(p.name) is not None
                for p in entry.iterdir()):
            out.append(entry)
    return out


def verify(data_dir: Path, out: Callable[[str], None]) -> VerifyResult:
    if not data_dir.is_dir():
        raise ToolError(f"{data_dir}: no such directory")
    lock = DataDirLock.acquire(data_dir)  # DataDirLockedError: a broker runs on it
    try:
        return _verify_all(data_dir, out)
    finally:
        lock.release()


def _verify_all(data_dir: Path, out: Callable[[str], None]) -> VerifyResult:
    result = VerifyResult()
    for directory in partition_dirs(data_dir):
        result.partitions += 1

        def problem(file: str, where: str, what: str, part: str = directory.name) -> None:
            result.problems += 1
            out(f"{part} {file} {where}: {what}")

        bases = sorted(o for p in directory.iterdir()
                       if p.name.endswith(LOG_SUFFIX) and (o := parse_offset(p.name)) is not None)
        expected_next: int | None = None
        for i, base in enumerate(bases):
            result.segments += 1
            if expected_next is not None and base != expected_next:
                problem(f"{base:020d}.log", "position 0",
                        f"segment starts at offset {base}, the previous one ends at "
                        f"{expected_next - 1}")
            end_hint = bases[i + 1] if i + 1 < len(bases) else -1
            expected_next = _verify_segment(directory, base, end_hint, result, problem)
    return result


def _verify_segment(
    directory: Path, base: int, next_base: int, result: VerifyResult,
    problem: Callable[[str, str, str], None],
) -> int:
    """Check one segment and its indexes; returns the offset after its last batch."""
    name = f"{base:020d}.log"
    batches: dict[int, BatchHeader] = {}
    damaged: list[scan.Damage] = []
    next_offset = base
    with _open(directory / name) as fd:
        size = os.fstat(fd).st_size
        for item in scan.walk(fd, 0, base, size, window=_WINDOW, known={},
                              next_offset=next_base):
            if isinstance(item, scan.Damage):
                damaged.append(item)
                problem(name, f"position {item.position}", f"{item.reason} "
                        f"({item.end - item.position} bytes unreadable, next good batch at "
                        f"position {item.end})")
                if item.next_offset >= 0:
                    next_offset = item.next_offset
                continue
            pos, h = item
            result.batches += 1
            batches[pos] = h
            next_offset = h.next_offset
            if not scan.crc_ok(fd, pos, h):
                problem(name, f"position {pos}", f"CRC-32C mismatch in batch "
                        f"{h.base_offset}..{h.last_offset} ({h.size} bytes)")
    _verify_offset_index(directory, base, size, batches, damaged, problem)
    _verify_time_index(directory, base, next_offset, batches, damaged, problem)
    return next_offset


def _index_data(path: Path, entry: struct.Struct,
                problem: Callable[[str, str, str], None]) -> bytes | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None  # indexes are caches: the broker rebuilds a missing one
    if len(data) % entry.size:
        problem(path.name, f"size {len(data)}", f"not a whole number of {entry.size}-byte "
                "entries")
    return data[:len(data) - len(data) % entry.size]


def _verify_offset_index(
    directory: Path, base: int, log_size: int, batches: dict[int, BatchHeader],
    damaged: list[scan.Damage], problem: Callable[[str, str, str], None],
) -> None:
    path = index_path(directory, base)
    data = _index_data(path, _OFFSET_ENTRY, problem)
    if data is None:
        return
    last = (-1, -1)
    for n, (rel, pos) in enumerate(_OFFSET_ENTRY.iter_unpack(data)):
        where = f"entry {n}"
        h = batches.get(pos)
        if any(d.position <= pos < d.end for d in damaged):
            pass  # reported with the log's damage
        elif rel <= last[0] or pos <= last[1]:
            problem(path.name, where, f"offset {base + rel} position {pos} is not after the "
                    "previous entry")
        elif pos >= log_size:
            problem(path.name, where, f"position {pos} is past the end of the log ({log_size})")
        elif h is None:
            problem(path.name, where, f"position {pos} is not the start of a good batch")
        elif h.base_offset != base + rel:
            problem(path.name, where, f"offset {base + rel} but the batch at position {pos} "
                    f"starts at offset {h.base_offset}")
        last = (rel, pos)


def _verify_time_index(
    directory: Path, base: int, next_offset: int, batches: dict[int, BatchHeader],
    damaged: list[scan.Damage], problem: Callable[[str, str, str], None],
) -> None:
    path = time_index_path(directory, base)
    data = _index_data(path, _TIME_ENTRY, problem)
    if data is None:
        return
    by_last = {h.last_offset: h for h in batches.values()}
    last_ts = -1
    for n, (ts, rel) in enumerate(_TIME_ENTRY.iter_unpack(data)):
        where = f"entry {n}"
        offset = base + rel
        h = by_last.get(offset)
        if ts <= last_ts:
            problem(path.name, where, f"timestamp {ts} is not after the previous entry's")
        elif any(d.first_offset <= offset < d.next_offset for d in damaged):
            pass  # reported with the log's damage
        elif not base <= offset < max(next_offset, base + 1):
            problem(path.name, where, f"offset {offset} is outside the segment")
        elif h is None:
            problem(path.name, where, f"offset {offset} is not the last offset of a good batch")
        elif h.max_timestamp != ts:
            problem(path.name, where, f"timestamp {ts} but the batch ending at offset {offset} "
                    f"has max timestamp {h.max_timestamp}")
        last_ts = ts

"""Committed offsets, persisted in an internal append-only log (Kafka's __consumer_offsets idea).

File: `<data_dir>/__consumer_offsets/offsets.log`, a sequence of records framed as
`[u32 payload length][u32 CRC-32C of payload][payload]`. Payload kinds:

  0 offset commit   (group, topic, partition) -> offset, leader epoch, metadata, commit and
                    expire timestamps
  1 offset delete   tombstone for (group, topic, partition)
  2 group record    group -> protocol type, generation, member count, state timestamp
                    (kept so offset retention still counts from "empty since" after a restart)
  3 group delete    tombstone for the group and every offset of it

Replay keeps the last value per key. Load truncates a torn or corrupt tail (the first record
whose frame is short or whose CRC fails, and everything after it) and rewrites the file when
most of it is dead records; a running store compacts the same way once the file holds several
times more records than live keys. Writes are group-committed: every `append()` waiting at the
time of a round is written with one os.write and one fdatasync in a worker thread, and the
in-memory view changes only after that, so a commit is acknowledged, and visible to OffsetFetch,
only once durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import crc32c

log = logging.getLogger("nerve.offsets")

TopicPartition = tuple[str, int]

OFFSETS_DIR = "__consumer_offsets"
OFFSETS_FILE = "offsets.log"
_FRAME = struct.Struct(">II")
_COMMIT = 0
_DELETE = 1
_GROUP = 2
_DELETE_GROUP = 3
# Runtime compaction: when the file holds this many records and several times the live ones.
COMPACT_MIN_RECORDS = 50_000
COMPACT_RATIO = 4


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = 0
    # OffsetCommit v2-v4 retention_time: an explicit expiry; -1 for the group rules.
    expire_timestamp: int = -1


@dataclass(frozen=True, slots=True)
class GroupRecord:
    protocol_type: str  # "" for a group that never had members ("simple" group)
    generation_id: int
    member_count: int
    state_timestamp: int


# An operation on the store: (kind, group, key, value).
Op = tuple[int, str, TopicPartition | None, OffsetAndMetadata | GroupRecord | None]


def commit_op(group: str, tp: TopicPartition, value: OffsetAndMetadata) -> Op:
    return (_COMMIT, group, tp, value)


def delete_op(group: str, tp: TopicPartition) -> Op:
    return (_DELETE, group, tp, None)


def group_op(group: str, record: GroupRecord) -> Op:
    return (_GROUP, group, None, record)


def delete_group_op(group: str) -> Op:
    return (_DELETE_GROUP, group, None, None)


# ---------------------------------------------------------------- encoding


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">I", len(raw)) + raw


def encode_op(op: Op) -> bytes:
    kind, group, tp, value = op
    body = bytearray([kind])
    body += _s(group)
    if kind in (_COMMIT, _DELETE):
        assert tp is not None
        body += _s(tp[0]) + struct.pack(">i", tp[1])
    if kind == _COMMIT:
        assert isinstance(value, OffsetAndMetadata)
        body += struct.pack(">qi", value.offset, value.leader_epoch) + _s(value.metadata)
        body += struct.pack(">qq", value.commit_timestamp, value.expire_timestamp)
    elif kind == _GROUP:
        assert isinstance(value, GroupRecord)
        body += _s(value.protocol_type)
        body += struct.pack(">iiq", value.generation_id, value.member_count,
                            value.state_timestamp)
    payload = bytes(body)
    return _FRAME.pack(len(payload), crc32c.crc32c(payload)) + payload


def decode_op(payload: bytes) -> Op:
    pos = 1

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from(">I", payload, pos)
        pos += 4
        if pos + n > len(payload):
            raise ValueError("string past the end of the record")
        out = payload[pos : pos + n].decode()
        pos += n
        return out

    kind = payload[0]
    group = string()
    tp: TopicPartition | None = None
    value: OffsetAndMetadata | GroupRecord | None = None
    if kind in (_COMMIT, _DELETE):
        topic = string()
        (partition,) = struct.unpack_from(">i", payload, pos)
        pos += 4
        tp = (topic, partition)
    if kind == _COMMIT:
        offset, epoch = struct.unpack_from(">qi", payload, pos)
        pos += 12
        metadata = string()
        commit_ts, expire_ts = struct.unpack_from(">qq", payload, pos)
        value = OffsetAndMetadata(offset, epoch, metadata, commit_ts, expire_ts)
    elif kind == _GROUP:
        ptype = string()
        generation, members, state_ts = struct.unpack_from(">iiq", payload, pos)
        value = GroupRecord(ptype, generation, members, state_ts)
    elif kind not in (_DELETE, _DELETE_GROUP):
        raise ValueError(f"unknown record kind {kind}")
    return (kind, group, tp, value)


def scan(data: bytes) -> tuple[list[Op], int]:
    """Decode records from the start; returns them and the length of the valid prefix."""
    ops: list[Op] = []
    pos = 0
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if end > len(data):
            break
        payload = data[pos + _FRAME.size : end]
        if crc32c.crc32c(payload) != crc:
            break
        try:
            ops.append(decode_op(payload))
        except (ValueError, struct.error, UnicodeDecodeError, IndexError):
            break
        pos = end
    return ops, pos


# ---------------------------------------------------------------- retention


def expired_offsets(
    offsets: Mapping[TopicPartition, OffsetAndMetadata],
    *,
    now: int,
    retention_ms: int,
    protocol_type: str | None,
    is_empty: bool,
    is_stable: bool,
    empty_since: int,
    subscribed_topics: set[str] | None,
) -> list[TopicPartition]:
    """Kafka's GroupMetadata.removeExpiredOffsets rules.

    - a group that had members and is now Empty: offsets expire `retention_ms` after the group
      became empty (KIP-211), not after their commit;
    - a Stable consumer group with a known subscription: offsets of topics it no longer
      subscribes to expire `retention_ms` after their commit (KIP-496);
    - a "simple" group (never had members; assign() consumers, tools): each offset expires
      `retention_ms` after its commit;
    - an explicit expire timestamp (OffsetCommit v2-v4 retention_time) overrides the base.
    """
    if protocol_type and is_empty:
        subscribed: set[str] = set()

        def base(o: OffsetAndMetadata) -> int:
            return empty_since
    elif protocol_type == "consumer" and subscribed_topics is not None and is_stable:
        subscribed = subscribed_topics

        def base(o: OffsetAndMetadata) -> int:
            return o.commit_timestamp
    elif not protocol_type:
        subscribed = set()

        def base(o: OffsetAndMetadata) -> int:
            return o.commit_timestamp
    else:
        return []
    out = []
    for tp, om in offsets.items():
        if tp[0] in subscribed:
            continue
        if om.expire_timestamp >= 0:
            if now >= om.expire_timestamp:
                out.append(tp)
        elif now - base(om) >= retention_ms:
            out.append(tp)
    return out


# ---------------------------------------------------------------- the store


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class OffsetStore:
    """The committed offsets of every group, and the log file that makes them durable.

    Owned by the broker's event loop; only the flusher task touches the file descriptor,
    from one worker thread at a time.
    """

    def __init__(self, data_dir: Path) -> None:
        self.directory = Path(data_dir) / OFFSETS_DIR
        self.path = self.directory / OFFSETS_FILE
        self.offsets: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
        self.groups: dict[str, GroupRecord] = {}
        self._fd: int | None = None
        self._size = 0
        self._records = 0  # records in the file (live and dead)
        self._pending: list[tuple[list[Op], bytes, asyncio.Future[None] | None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.truncated_bytes = 0  # torn tail dropped at load (tests, logs)
        self.rounds = 0  # fsync rounds (tests)

    # ---- load

    def load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / (OFFSETS_FILE + ".tmp")).unlink()  # an interrupted compaction
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if created:
            _fsync_dir(self.directory)
        data = b""
        with open(self.path, "rb") as f:
            data = f.read()
        ops, valid = scan(data)
        if valid < len(data):
            self.truncated_bytes = len(data) - valid
            log.warning("offsets log %s: dropping %d byte(s) of torn or corrupt tail at %d",
                        self.path, len(data) - valid, valid)
            os.ftruncate(self._fd, valid)
            os.fsync(self._fd)
        for op in ops:
            self._apply(op)
        self._size = valid
        self._records = len(ops)
        if self._records > 2 * self.live_records() + 1000:
            self._rewrite(self._snapshot())
        os.lseek(self._fd, self._size, os.SEEK_SET)
        log.info("loaded committed offsets of %d group(s) from %s", len(self.offsets), self.path)

    def live_records(self) -> int:
        return sum(len(v) for v in self.offsets.values()) + len(self.groups)

    def _apply(self, op: Op) -> None:
        kind, group, tp, value = op
        if kind == _COMMIT:
            assert tp is not None and isinstance(value, OffsetAndMetadata)
            self.offsets.setdefault(group, {})[tp] = value
        elif kind == _DELETE:
            assert tp is not None
            offsets = self.offsets.get(group)
            if offsets is not None:
                offsets.pop(tp, None)
                if not offsets:
                    del self.offsets[group]
        elif kind == _GROUP:
            assert isinstance(value, GroupRecord)
            self.groups[group] = value
        else:
            self.offsets.pop(group, None)
            self.groups.pop(group, None)

    # ---- reads

    def get(self, group: str) -> Mapping[TopicPartition, OffsetAndMetadata]:
        return self.offsets.get(group, {})

    def has_offsets(self, group: str) -> bool:
        return bool(self.offsets.get(group))

    # ---- writes

    async def append(self, ops: Iterable[Op]) -> None:
        """Make `ops` durable, then apply them; raises OSError if the write failed."""
        batch = list(ops)
        if not batch:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, b"".join(encode_op(op) for op in batch), fut))
        self._kick()
        await fut

    def append_nowait(self, ops: Iterable[Op]) -> None:
        """Queue `ops` for the next round without waiting (group records: best effort)."""
        batch = list(ops)
        if batch:
            self._pending.append((batch, b"".join(encode_op(op) for op in batch), None))
            self._kick()

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self._pending:
            round_, self._pending = self._pending, []
            data = b"".join(item[1] for item in round_)
            try:
                await asyncio.to_thread(self._write_durable, data)
            except OSError as e:
                log.error("offsets log write failed: %s", e)
                for _, _, fut in round_:
                    if fut is not None and not fut.done():
                        fut.set_exception(e)
                continue
            self.rounds += 1
            for ops, _, fut in round_:
                for op in ops:
                    self._apply(op)
                self._records += len(ops)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            if (self._records >= COMPACT_MIN_RECORDS
                    and self._records > COMPACT_RATIO * self.live_records()):
                snapshot = self._snapshot()
                try:
                    await asyncio.to_thread(self._rewrite, snapshot)
                except OSError as e:
                    log.error("offsets log compaction failed: %s", e)

    def _write_durable(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            _write_all(self._fd, data)
            os.fdatasync(self._fd)
        except OSError:
            # Leave no half-written record behind a later, successful one.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
                os.lseek(self._fd, self._size, os.SEEK_SET)
            raise
        self._size += len(data)

    def _snapshot(self) -> list[bytes]:
        out = [encode_op(group_op(g, rec)) for g, rec in self.groups.items()]
        for group, offsets in self.offsets.items():
            out.extend(encode_op(commit_op(group, tp, om)) for tp, om in offsets.items())
        return out

    def _rewrite(self, records: list[bytes]) -> None:
        """Compaction: write the live records to a new file, then swap it in atomically."""
        tmp = self.directory / (OFFSETS_FILE + ".tmp")
        data = b"".join(records)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        os.replace(tmp, self.path)
        _fsync_dir(self.directory)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd  # already positioned at the end of the new file
        self._size = len(data)
        self._records = len(records)
        os.lseek(self._fd, self._size, os.SEEK_SET)
        log.info("compacted offsets log to %d record(s)", len(records))

    async def close(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

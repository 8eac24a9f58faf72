"""TransactionCoordinator: Kafka's transactions (KIP-98, KIP-447; transaction version 1) for
this single node, on the broker's event loop.

State per transactional.id (Kafka's TransactionMetadata): producer id and epoch, timeout, state
(Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, Dead), the
partitions and groups of the current transaction, and the offsets TxnOffsetCommit staged.

Persistence (Kafka's __transaction_state idea): `<data_dir>/__transaction_state/
transactions.log`, framed like the offsets log (`[u32 length][u32 CRC-32C][payload]`), one
JSON payload per state change holding the id's whole metadata; replay keeps the last one per
id, and a torn tail is truncated. Every change is written and fdatasynced before the client is
answered. EndTxn: PrepareX is durable, then the markers are written to every partition and
fsynced, staged offsets are committed (or dropped), then CompleteX. At start a transaction found
in PrepareCommit/PrepareAbort is completed; an Ongoing one is aborted once past its timeout
(checked every `transaction.abort.timed.out.transaction.cleanup.interval.ms`), with an epoch
bump that fences its producer, as Kafka does. Ids idle (no open transaction) for
`transactional.id.expiration.ms` are forgotten (checked every
`transaction.remove.expired.transaction.cleanup.interval.ms`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import crc32c

from nerve.broker import BrokerCore, on_start, on_stop
from nerve.coordinator.coordinator import coordinator_of
from nerve.coordinator.offsets import OffsetAndMetadata, commit_op
from nerve.protocol.errors import ErrorCode
from nerve.storage.errors import StorageError

log = logging.getLogger("nerve.transactions")

TXN_DIR = "__transaction_state"
TXN_FILE = "transactions.log"
_FRAME = struct.Struct(">II")
MAX_EPOCH = 32766
TopicPartition = tuple[str, int]
# Test hook for crash tests (never set in production): an EndTxn from a producer whose
# transactional.id starts with this prefix hangs after its PrepareCommit/PrepareAbort record is
# fsynced, before the markers, until the broker is killed.
_PAUSE_AFTER_PREPARE = os.environ.get("NERVE_TEST_PAUSE_AFTER_PREPARE") or None


class TxnState(Enum):
    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"
    DEAD = "Dead"


@dataclass(slots=True)
class TxnMetadata:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    partitions: set[TopicPartition] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    # group -> (topic, partition) -> offset: TxnOffsetCommit, applied on commit only
    pending_offsets: dict[str, dict[TopicPartition, OffsetAndMetadata]] = field(
        default_factory=dict)
    start_ms: int = -1  # when the current transaction began (Ongoing)
    update_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.transactional_id, "pid": self.producer_id, "epoch": self.producer_epoch,
            "timeout": self.timeout_ms, "state": self.state.value,
            "partitions": sorted([t, p] for t, p in self.partitions),
            "groups": sorted(self.groups),
            "offsets": [[g, t, p, om.offset, om.leader_epoch, om.metadata, om.commit_timestamp]
                        for g, offs in self.pending_offsets.items()
                        for (t, p), om in offs.items()],
            "start": self.start_ms, "update": self.update_ms,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TxnMetadata:
        meta = cls(str(d["id"]), int(d["pid"]), int(d["epoch"]), int(d["timeout"]),
                   TxnState(d["state"]), {(str(t), int(p)) for t, p in d["partitions"]},
                   set(d["groups"]), {}, int(d["start"]), int(d["update"]))
        for g, t, p, off, epoch, md, ts in d["offsets"]:
            meta.pending_offsets.setdefault(g, {})[(t, int(p))] = OffsetAndMetadata(
                int(off), int(epoch), str(md), int(ts))
        return meta


class TxnLog:
    """The durable record of every transactional id's metadata."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = Path(data_dir) / TXN_DIR
        self.path = self.directory / TXN_FILE
        self._fd: int | None = None
        self._records = 0
        self._lock = asyncio.Lock()

    def load(self) -> dict[str, TxnMetadata]:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        data = os.pread(self._fd, os.fstat(self._fd).st_size, 0)
        out: dict[str, TxnMetadata] = {}
        pos = 0
        while pos + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, pos)
            end = pos + _FRAME.size + length
            payload = data[pos + _FRAME.size:end]
            if end > len(data) or crc32c.crc32c(payload) != crc:
                break
            try:
                d = json.loads(payload)
                if d.get("deleted"):
                    out.pop(str(d["id"]), None)
                else:
                    meta = TxnMetadata.from_json(d)
                    out[meta.transactional_id] = meta
            except (ValueError, KeyError, TypeError):
                break
            pos = end
            self._records += 1
        if pos < len(data):
            log.warning("transaction log %s: dropping %d byte(s) of torn or corrupt tail",
                        self.path, len(data) - pos)
            os.ftruncate(self._fd, pos)
            os.fsync(self._fd)
        os.lseek(self._fd, pos, os.SEEK_SET)
        if self._records > 2 * len(out) + 1000:
            self._rewrite(out)
        return out

    @staticmethod
    def _frame(d: dict[str, Any]) -> bytes:
        payload = json.dumps(d, separators=(",", ":")).encode()
        return _FRAME.pack(len(payload), crc32c.crc32c(payload)) + payload

    async def write(self, metas: list[TxnMetadata], deleted: tuple[str, ...] = ()) -> None:
        data = b"".join([self._frame(m.to_json()) for m in metas]
                        + [self._frame({"id": t, "deleted": True}) for t in deleted])
        async with self._lock:
            await asyncio.to_thread(self._write_durable, data)
            self._records += len(metas) + len(deleted)

    def _write_durable(self, data: bytes) -> None:
        assert self._fd is not None
        size = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fdatasync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)
            raise

    def _rewrite(self, metas: dict[str, TxnMetadata]) -> None:
        tmp = self.directory / (TXN_FILE + ".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(self._frame(m.to_json()) for m in metas.values()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR)
        os.lseek(self._fd, 0, os.SEEK_END)
        self._records = len(metas)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class TxnError(Exception):
    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code


class TransactionCoordinator:
    def __init__(self, core: BrokerCore, clock: Callable[[], float] = time.time) -> None:
        self.core = core
        self.clock = clock
        config = core.config
        self.max_timeout_ms = config.get_int("transaction.max.timeout.ms")
        self.abort_interval_ms = config.get_int(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms")
        self.id_expiration_ms = config.get_int("transactional.id.expiration.ms")
        self.remove_interval_ms = config.get_int(
            "transaction.remove.expired.transaction.cleanup.interval.ms")
        self.log = TxnLog(core.data_dir)
        self.txns: dict[str, TxnMetadata] = {}
        self.by_pid: dict[int, TxnMetadata] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def start(self) -> None:
        self.txns = self.log.load()
        self.by_pid = {m.producer_id: m for m in self.txns.values()}
        for meta in list(self.txns.values()):
            if meta.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                log.info("completing transaction %r (%s) found at start",
                         meta.transactional_id, meta.state.value)
                await self._complete(meta, meta.state is TxnState.PREPARE_COMMIT)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())
        log.info("transaction coordinator started: %d transactional id(s)", len(self.txns))

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.log.close()

    def _lock(self, transactional_id: str) -> asyncio.Lock:
        lock = self._locks.get(transactional_id)
        if lock is None:
            lock = self._locks[transactional_id] = asyncio.Lock()
        return lock

    async def _persist(self, meta: TxnMetadata) -> None:
        meta.update_ms = self.now_ms()
        try:
            await self.log.write([meta])
        except OSError as e:
            log.error("transaction log write failed: %s", e)
            raise TxnError(ErrorCode.coordinator_not_available, str(e)) from e

    # ------------------------------------------------------------------ InitProducerId

    async def init_producer_id(self, transactional_id: str, timeout_ms: int,
                               producer_id: int, producer_epoch: int) -> tuple[int, int]:
        if not transactional_id:
            raise TxnError(ErrorCode.invalid_request, "empty transactional id")
        if timeout_ms <= 0 or timeout_ms > self.max_timeout_ms:
            raise TxnError(ErrorCode.invalid_transaction_timeout,
                           f"transaction timeout {timeout_ms} ms is not in "
                           f"(0, {self.max_timeout_ms}] (transaction.max.timeout.ms)")
        async with self._lock(transactional_id):
            meta = self.txns.get(transactional_id)
            if meta is None or meta.state is TxnState.DEAD:
                meta = TxnMetadata(transactional_id, self.core.producer_ids.next_producer_id(),
                                   0, timeout_ms)
                await self._persist(meta)
                self._index(meta)
                return meta.producer_id, meta.producer_epoch
            if producer_id >= 0 and (producer_id != meta.producer_id
                                     or producer_epoch not in (meta.producer_epoch,
                                                               meta.producer_epoch - 1)):
                # KIP-360: only the current producer may bump its own epoch.
                raise TxnError(ErrorCode.producer_fenced,
                               f"producer {producer_id} epoch {producer_epoch} is not the "
                               f"current one of {transactional_id!r}")
            if meta.state is TxnState.ONGOING:
                # A new instance fences the old one and aborts what it left open.
                self._bump(meta)
                await self._end(meta, commit=False)
            elif meta.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                raise TxnError(ErrorCode.concurrent_transactions)
            if producer_id >= 0 and producer_epoch == meta.producer_epoch - 1:
                pass  # a retry of a bump that already happened: answer the same epoch
            else:
                self._bump(meta)
            meta.timeout_ms = timeout_ms
            meta.state = TxnState.EMPTY
            await self._persist(meta)
            return meta.producer_id, meta.producer_epoch

    def _bump(self, meta: TxnMetadata) -> None:
        if meta.producer_epoch >= MAX_EPOCH:
            self.by_pid.pop(meta.producer_id, None)
            meta.producer_id = self.core.producer_ids.next_producer_id()
            meta.producer_epoch = 0
            self._index(meta)
        else:
            meta.producer_epoch += 1

    def _index(self, meta: TxnMetadata) -> None:
        self.txns[meta.transactional_id] = meta
        self.by_pid[meta.producer_id] = meta

    # ------------------------------------------------------------------ validation

    def _check(self, transactional_id: str, producer_id: int, epoch: int) -> TxnMetadata:
        meta = self.txns.get(transactional_id)
        if meta is None or meta.state is TxnState.DEAD:
            raise TxnError(ErrorCode.invalid_producer_id_mapping,
                           f"no producer id for transactional id {transactional_id!r}")
        if meta.producer_id != producer_id:
            raise TxnError(ErrorCode.invalid_producer_id_mapping,
                           f"producer id {producer_id} is not the one of {transactional_id!r}")
        if epoch != meta.producer_epoch:
            raise TxnError(ErrorCode.producer_fenced,
                           f"epoch {epoch} is not the current {meta.producer_epoch}")
        if meta.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
            raise TxnError(ErrorCode.concurrent_transactions)
        return meta

    def _begin(self, meta: TxnMetadata) -> None:
        if meta.state is not TxnState.ONGOING:
            meta.state = TxnState.ONGOING
            meta.start_ms = self.now_ms()
            meta.partitions = set()
            meta.groups = set()
            meta.pending_offsets = {}

    # ------------------------------------------------------------------ AddPartitions/Offsets

    async def add_partitions(self, transactional_id: str, producer_id: int, epoch: int,
                             partitions: list[TopicPartition]) -> dict[TopicPartition, ErrorCode]:
        async with self._lock(transactional_id):
            meta = self._check(transactional_id, producer_id, epoch)
            unknown = [tp for tp in partitions if self.core.logs.get_log(*tp) is None]
            if unknown:
                return {tp: ErrorCode.unknown_topic_or_partition if tp in unknown
                        else ErrorCode.operation_not_attempted for tp in partitions}
            new = set(partitions) - meta.partitions
            if new or meta.state is not TxnState.ONGOING:
                self._begin(meta)
                meta.partitions |= new
                await self._persist(meta)
            return dict.fromkeys(partitions, ErrorCode.none)

    async def add_offsets(self, transactional_id: str, producer_id: int, epoch: int,
                          group_id: str) -> None:
        async with self._lock(transactional_id):
            meta = self._check(transactional_id, producer_id, epoch)
            if group_id not in meta.groups or meta.state is not TxnState.ONGOING:
                self._begin(meta)
                meta.groups.add(group_id)
                await self._persist(meta)

    async def txn_offset_commit(self, transactional_id: str, producer_id: int, epoch: int,
                                group_id: str,
                                offsets: list[tuple[str, int, OffsetAndMetadata]]) -> ErrorCode:
        async with self._lock(transactional_id):
            meta = self.txns.get(transactional_id)
            if meta is None or meta.producer_id != producer_id:
                return ErrorCode.invalid_producer_id_mapping
            if epoch != meta.producer_epoch:
                return ErrorCode.producer_fenced
            if meta.state is not TxnState.ONGOING or group_id not in meta.groups:
                return ErrorCode.invalid_txn_state
            staged = meta.pending_offsets.setdefault(group_id, {})
            for topic, partition, om in offsets:
                staged[(topic, partition)] = om
            await self._persist(meta)
            return ErrorCode.none

    def has_pending_offsets(self, group_id: str, tp: TopicPartition) -> bool:
        return any(tp in m.pending_offsets.get(group_id, {}) for m in self.txns.values()
                   if m.state is TxnState.ONGOING)

    # ------------------------------------------------------------------ EndTxn

    async def end_txn(self, transactional_id: str, producer_id: int, epoch: int,
                      commit: bool) -> None:
        async with self._lock(transactional_id):
            meta = self.txns.get(transactional_id)
            prepared = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
            if (meta is not None and meta.state is prepared and meta.producer_id == producer_id
                    and meta.producer_epoch == epoch):
                await self._complete(meta, commit)  # an earlier attempt failed midway
                return
            meta = self._check(transactional_id, producer_id, epoch)
            if meta.state is TxnState.ONGOING:
                await self._end(meta, commit, client=True)
                return
            done = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
            if meta.state is done:
                return  # a retried EndTxn
            raise TxnError(ErrorCode.invalid_txn_state,
                           f"{'commit' if commit else 'abort'} of {transactional_id!r} in state "
                           f"{meta.state.value}")

    async def _end(self, meta: TxnMetadata, commit: bool, client: bool = False) -> None:
        meta.state = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        await self._persist(meta)
        if client and _PAUSE_AFTER_PREPARE and meta.transactional_id.startswith(
                _PAUSE_AFTER_PREPARE):
            log.warning("test hook: %s of %r is durable; pausing before its markers",
                        meta.state.value, meta.transactional_id)
            await asyncio.Event().wait()  # until the test kills the broker
        await self._complete(meta, commit)

    async def _complete(self, meta: TxnMetadata, commit: bool) -> None:
        """Markers on every partition (fsynced), then the offsets, then CompleteX."""
        now = self.now_ms()
        touched = []
        try:
            for topic, partition in sorted(meta.partitions):
                plog = self.core.logs.get_log(topic, partition)
                if plog is None:
                    continue  # deleted meanwhile
                plog.append_marker(meta.producer_id, meta.producer_epoch, commit, now_ms=now)
                touched.append(plog)
                self.core.waiters.notify(topic, partition)
            if touched:
                await self.core.logs.flush(touched)
            groups = coordinator_of(self.core)
            if commit and meta.pending_offsets and groups is not None:
                await groups.store.append([commit_op(g, tp, om)
                                           for g, offs in meta.pending_offsets.items()
                                           for tp, om in offs.items()])
        except (OSError, StorageError) as e:
            # Stays PrepareX: a retried EndTxn (CONCURRENT_TRANSACTIONS until then) or the next
            # start completes it; markers written twice are harmless.
            log.error("completing transaction %r failed: %s", meta.transactional_id, e)
            raise TxnError(ErrorCode.coordinator_not_available, str(e)) from e
        meta.state = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        meta.partitions = set()
        meta.groups = set()
        meta.pending_offsets = {}
        meta.start_ms = -1
        await self._persist(meta)

    # ------------------------------------------------------------------ produce check

    def check_produce(self, producer_id: int, epoch: int, tp: TopicPartition) -> ErrorCode:
        """A transactional batch: its producer must own an Ongoing transaction with `tp`."""
        meta = self.by_pid.get(producer_id)
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if epoch < meta.producer_epoch:
            return ErrorCode.invalid_producer_epoch
        if epoch > meta.producer_epoch:
            return ErrorCode.invalid_producer_epoch
        if meta.state is not TxnState.ONGOING or tp not in meta.partitions:
            return ErrorCode.invalid_txn_state
        return ErrorCode.none

    # ------------------------------------------------------------------ timeouts

    async def abort_timed_out(self) -> int:
        now = self.now_ms()
        count = 0
        for meta in list(self.txns.values()):
            if meta.state is not TxnState.ONGOING or now - meta.start_ms <= meta.timeout_ms:
                continue
            async with self._lock(meta.transactional_id):
                if meta.state is not TxnState.ONGOING:
                    continue
                log.info("aborting transaction %r: open for %d ms, timeout %d ms",
                         meta.transactional_id, now - meta.start_ms, meta.timeout_ms)
                self._bump(meta)  # fences the producer that let it time out
                await self._end(meta, commit=False)
                count += 1
        return count

    async def remove_expired(self) -> int:
        """Kafka's transactional.id.expiration.ms: forget ids with no open transaction whose
        last change is older than that (a later InitProducerId starts afresh)."""
        now = self.now_ms()
        idle = (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)
        expired = [m for m in self.txns.values()
                   if m.state in idle and now - m.update_ms >= self.id_expiration_ms
                   and not self._lock(m.transactional_id).locked()]
        if not expired:
            return 0
        await self.log.write([], deleted=tuple(m.transactional_id for m in expired))
        for m in expired:
            self.txns.pop(m.transactional_id, None)
            if self.by_pid.get(m.producer_id) is m:
                del self.by_pid[m.producer_id]
            self._locks.pop(m.transactional_id, None)
        log.info("removed %d expired transactional id(s)", len(expired))
        return len(expired)

    async def _sweep_loop(self) -> None:
        last_removal = self.now_ms()
        while True:
            await asyncio.sleep(self.abort_interval_ms / 1000)
            try:
                await self.abort_timed_out()
                if self.now_ms() - last_removal >= self.remove_interval_ms:
                    last_removal = self.now_ms()
                    await self.remove_expired()
            except (TxnError, OSError) as e:
                log.error("transaction timeout/expiration pass failed: %s", e)


def transactions_of(core: Any) -> TransactionCoordinator | None:
    txn = getattr(core, "extensions", {}).get("transactions")
    return txn if isinstance(txn, TransactionCoordinator) else None


@on_start
async def _start_transaction_coordinator(core: BrokerCore) -> None:
    coordinator = TransactionCoordinator(core)
    await coordinator.start()
    core.extensions["transactions"] = coordinator


@on_stop
async def _stop_transaction_coordinator(core: BrokerCore) -> None:
    coordinator = transactions_of(core)
    if coordinator is not None:
        await coordinator.stop()
        del core.extensions["transactions"]


def fenced_code(code: ErrorCode, version: int, since: int) -> ErrorCode:
    """PRODUCER_FENCED (KIP-588) is INVALID_PRODUCER_EPOCH for request versions before `since`,
    as Kafka answers older clients."""
    if code is ErrorCode.producer_fenced and version < since:
        return ErrorCode.invalid_producer_epoch
    return code

"""LogManager: the data directory, the topic catalog, recovery at boot, retention, the flush
policy and group commit (Kafka's LogManager, single data dir).

Layout of data_dir:
  topics.json                        catalog: name, topic id, partition count, overrides
  <topic>-<partition>/               one PartitionLog each (segments, indexes, snapshots)
  recovery-point-offset-checkpoint   Kafka's format; bounds recovery after an unclean stop
  .nerve_clean_shutdown              written by a clean stop, removed at load
  .lock                              flock held by the owner (lock.py), with its pid
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nerve import trace
from nerve.config import BrokerConfig, TopicConfig, validate_topic_configs
from nerve.stats import FlushStats
from nerve.storage.cleaner import LogCleaner
from nerve.storage.errors import (
    InvalidPartitionsError,
    InvalidTopicError,
    LogCreationError,
    PartitionLimitError,
    TopicExistsError,
    UnknownTopicError,
)
from nerve.storage.files import (
    CATALOG_FILE,
    CLEAN_SHUTDOWN_FILE,
    DELETE_DIR_SUFFIX,
    RECOVERY_POINT_FILE,
    fsync_dir,
    partition_dir_name,
    unlink_quietly,
    write_file_atomic,
)
from nerve.storage.fsync_thread import FsyncThread
from nerve.storage.handles import HandleCache, open_file_limit, shared_cache
from nerve.storage.lock import DataDirLock
from nerve.storage.log import FlushToken, PartitionLog
from nerve.storage.reaper import SegmentReaper
from nerve.storage.segment import LogSegment

log = logging.getLogger("nerve.storage")

_LEGAL_NAME = re.compile(r"[a-zA-Z0-9._-]+")
MAX_TOPIC_NAME_LENGTH = 249
_EMPTY: Mapping[str, str] = MappingProxyType({})
# How often the flush.ms / flush.messages policy and due file deletions are checked.
POLICY_TICK_S = 0.1
# The recovery-point checkpoint is rewritten after fsync rounds that advanced a recovery
# point, at most this often (Kafka writes it every log.flush.offset.checkpoint.interval.ms,
# 60 s; sooner means less fsynced data is re-validated, and maybe cut, after a crash).
RECOVERY_CHECKPOINT_MIN_INTERVAL_S = 1.0
# Flush rounds of at least this many logs fsync on this many threads.
_PARALLEL_FSYNC_MIN = 64
_FSYNC_THREADS = 4
# max.partitions=0 (the default): this many partitions per descriptor of RLIMIT_NOFILE.
PARTITIONS_PER_OPEN_FILE = 4


def max_partitions(config: BrokerConfig) -> tuple[int, str]:
    """The partition cap and where it comes from (for messages and the start-up log)."""
    configured = config.get_int("max.partitions")
    if configured > 0:
        return configured, "max.partitions"
    limit = open_file_limit()[0]
    return PARTITIONS_PER_OPEN_FILE * limit, f"{PARTITIONS_PER_OPEN_FILE} x the open file " \
        f"limit {limit}"


def validate_topic_name(name: str) -> None:
    """Kafka's Topic.validate, with its messages."""
    if not name:
        raise InvalidTopicError("Topic name is invalid: the empty string is not allowed")
    if name in (".", ".."):
        raise InvalidTopicError(f"Topic name is invalid: '{name}' is not allowed")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidTopicError(f"Topic name is invalid: the length of '{name}' is longer than "
                                f"the max allowed length {MAX_TOPIC_NAME_LENGTH}")
    if not _LEGAL_NAME.fullmatch(name):
        raise InvalidTopicError(f"Topic name is invalid: '{name}' contains one or more "
                                "characters other than ASCII alphanumerics, '.', '_' and '-'")


@dataclass
class TopicInfo:
    name: str
    topic_id: uuid.UUID
    num_partitions: int
    overrides: dict[str, str]
    config: TopicConfig


def _run_token(token: FlushToken) -> OSError | None:
    try:
        token.run()
    except OSError as e:
        # Without its traceback: frames of this call would keep the tokens' file handles
        # alive in a reference cycle until the next garbage collection.
        return e.with_traceback(None)
    return None


def _run_tokens(tokens: list[FlushToken]) -> tuple[list[OSError | None], float, float]:
    """Run each token (in a worker thread); one log's failed fsync does not stop the rest.
    Also returns when the thread started and ended (nerve/trace.py)."""
    started = trace.now()
    if len(tokens) < _PARALLEL_FSYNC_MIN:
        return [_run_token(t) for t in tokens], started, trace.now()
    # A round of many partitions (a stop after recovering thousands of tails, a produce to
    # thousands of partitions): parallel fsyncs share the filesystem's journal commits.
    with ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="nerve-fsync") as pool:
        return list(pool.map(_run_token, tokens)), started, trace.now()


class LogManager:
    def __init__(
        self, data_dir: Path, broker_config: BrokerConfig, *,
        clock: Callable[[], float] = time.time,
        handles: HandleCache | None = None,
        lock: DataDirLock | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        # The data dir's owner lock: the broker passes the one it took before reading
        # anything; otherwise load() takes it (and close() releases it).
        self.lock = lock
        self._own_lock = lock is None
        # Open segment and index files, bounded (see handles.py); process-wide by default.
        self.handles = handles if handles is not None else shared_cache()
        self.broker_config = broker_config
        self.clock = clock
        self.topics: dict[str, TopicInfo] = {}
        self._by_id: dict[uuid.UUID, TopicInfo] = {}
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        # Logs appended to (or cut) since the flush policy last found them clean: the policy
        # tick looks at these only (every partition every 100 ms was ~1% CPU per 1,000
        # partitions of an idle broker).
        self._dirty: dict[int, PartitionLog] = {}
        self.reaper = SegmentReaper(clock)
        self.cleaner = LogCleaner(self)  # log compaction (cleaner.py)
        self._tasks: list[asyncio.Task[None]] = []
        # Group commit: logs waiting for the next fsync round, and that round's future.
        self._waiting: dict[int, PartitionLog] = {}
        self._next_round: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._fsync_thread = FsyncThread()  # runs the rounds' fsyncs (fsync_thread.py)
        self.fsync_rounds = 0  # rounds that fsynced something (tests, metrics)
        self.flush_stats = FlushStats()  # fsync round latency and logs per round (metrics)
        # The recovery-point checkpoint writer: one at a time, after fsync rounds.
        self._checkpoint_dirty = False
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._checkpoint_io: asyncio.Future[None] | None = None
        self._checkpoint_at = float("-inf")  # loop time of the last write
        self.clean_load: bool | None = None  # whether load() found the clean marker
        self._loaded = False
        self._closed = False

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # ---- load ----

    def load(self) -> None:
        if self.lock is None:
            self.lock = DataDirLock.acquire(self.data_dir)
        marker = self.data_dir / CLEAN_SHUTDOWN_FILE
        clean = marker.exists()
        if clean:
            # Durably gone before any append: a later crash must not look clean.
            marker.unlink()
            fsync_dir(self.data_dir)
        self.clean_load = clean
        recovery_points = self._read_recovery_points()
        for entry in self.data_dir.iterdir():
            if entry.is_dir() and entry.name.endswith(DELETE_DIR_SUFFIX):
                self.reaper.schedule(lambda p=entry: shutil.rmtree(p, ignore_errors=True), 0)
        for info in self._read_catalog():
            self._register(info)
            for p in range(info.num_partitions):
                self._open_log(info, p, clean=clean, recovery_point=recovery_points.get(
                    (info.name, p)))
        self._loaded = True
        fresh = not (self.data_dir / CATALOG_FILE).exists()
        state = "new data dir" if fresh else ("clean shutdown" if clean else "unclean shutdown")
        log.info("loaded %d topic(s), %d partition(s) from %s (%s)", len(self.topics),
                 len(self._logs), self.data_dir, state)
        cap, why = max_partitions(self.broker_config)
        log.info("max.partitions %d (%s); up to %d segment/index files open at once", cap, why,
                 self.handles.capacity)

    def _open_log(
        self, info: TopicInfo, partition: int, *, clean: bool, recovery_point: int | None
    ) -> PartitionLog:
        plog = PartitionLog(self.data_dir / partition_dir_name(info.name, partition), info.name,
                            partition, info.config, clean=clean, recovery_point=recovery_point,
                            reaper=self.reaper, clock=self.clock, handles=self.handles)
        plog.on_dirty = self._mark_dirty
        self._logs[(info.name, partition)] = plog
        return plog

    def _mark_dirty(self, plog: PartitionLog) -> None:
        self._dirty[id(plog)] = plog

    def _register(self, info: TopicInfo) -> None:
        self.topics[info.name] = info
        self._by_id[info.topic_id] = info

    # ---- catalog ----

    def _read_catalog(self) -> list[TopicInfo]:
        path = self.data_dir / CATALOG_FILE
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return []
        out = []
        for t in data["topics"]:
            overrides = dict(t.get("configs", {}))
            out.append(TopicInfo(t["name"], uuid.UUID(t["topic_id"]), int(t["partitions"]),
                                 overrides, TopicConfig(overrides, self.broker_config)))
        return out

    def _write_catalog(self) -> None:
        # Small and rare (admin requests): written durably on the spot.
        data = {"version": 1, "topics": [
            {"name": i.name, "topic_id": str(i.topic_id), "partitions": i.num_partitions,
             "configs": i.overrides}
            for i in self.topics.values()
        ]}
        write_file_atomic(self.data_dir / CATALOG_FILE,
                          json.dumps(data, indent=1, sort_keys=True).encode())

    def _read_recovery_points(self) -> dict[tuple[str, int], int]:
        path = self.data_dir / RECOVERY_POINT_FILE
        try:
            lines = path.read_text().splitlines()
            out = {}
            for line in lines[2:]:
                topic, partition, offset = line.split()
                out[(topic, int(partition))] = int(offset)
            return out
        except (FileNotFoundError, ValueError):
            return {}

    def _recovery_checkpoint_bytes(self) -> bytes:
        lines = [f"{lg.topic} {lg.partition} {lg.recovery_point}" for lg in self._logs.values()]
        return ("\n".join(["0", str(len(lines)), *lines]) + "\n").encode()

    async def write_recovery_checkpoint(self) -> None:
        """Write the recovery points as they are now (tmp + fsync + rename + dir fsync)."""
        self._checkpoint_dirty = True
        if self._checkpoint_task is None:
            self._checkpoint_task = asyncio.create_task(self._write_checkpoints(0.0))
        await asyncio.shield(self._checkpoint_task)

    def _checkpoint_soon(self) -> None:
        """After an fsync round: rewrite the checkpoint, at most every
        RECOVERY_CHECKPOINT_MIN_INTERVAL_S (one writer at a time)."""
        self._checkpoint_dirty = True
        if self._checkpoint_task is None and self._tasks:
            self._checkpoint_task = asyncio.create_task(
                self._write_checkpoints(RECOVERY_CHECKPOINT_MIN_INTERVAL_S),
                name="nerve-storage-checkpoint")

    async def _write_checkpoints(self, spacing: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._checkpoint_dirty:
                wait = self._checkpoint_at + spacing - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._checkpoint_dirty = False
                data = self._recovery_checkpoint_bytes()  # captured on the loop
                self._checkpoint_io = asyncio.ensure_future(asyncio.to_thread(
                    write_file_atomic, self.data_dir / RECOVERY_POINT_FILE, data))
                try:
                    await asyncio.shield(self._checkpoint_io)
                except OSError as e:
                    # The old checkpoint stays: recovery after a crash just validates more.
                    log.error("writing %s failed: %s", RECOVERY_POINT_FILE, e)
                self._checkpoint_at = loop.time()
        finally:
            self._checkpoint_task = None

    # ---- topics ----

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None:
        return self._by_id.get(topic_id)

    def check_new_topic_name(self, name: str) -> None:
        """Raise unless `name` is valid and free: neither taken nor equal to an existing name
        once '.' and '_' are confused (Kafka refuses those: they collide in metric names)."""
        validate_topic_name(name)
        if name in self.topics:
            raise TopicExistsError(f"Topic '{name}' already exists.")
        collides = name.replace(".", "_")
        for other in self.topics:
            if other.replace(".", "_") == collides:
                raise InvalidTopicError(f"Topic '{name}' collides with existing topic: {other}")

    @property
    def partition_count(self) -> int:
        return len(self._logs)

    def check_partition_limit(self, adding: int, pending: int = 0) -> None:
        """Raise PartitionLimitError unless `adding` more partitions (after `pending` ones a
        request already counted) stay within max.partitions."""
        cap, why = max_partitions(self.broker_config)
        total = len(self._logs) + pending + adding
        if total > cap:
            raise PartitionLimitError(
                f"Cannot add {adding} partition(s): this broker would hold {total}, more than "
                f"max.partitions {cap} ({why}).")

    def create_topic(
        self, name: str, num_partitions: int, overrides: Mapping[str, str] = _EMPTY
    ) -> TopicInfo:
        """All or nothing: every partition's files exist before the catalog names the topic;
        a failure part-way removes what this call created (LogCreationError)."""
        self.check_new_topic_name(name)
        if num_partitions <= 0:
            raise InvalidPartitionsError(f"partition count must be > 0, got {num_partitions}")
        self.check_partition_limit(num_partitions)
        checked = validate_topic_configs(overrides)
        info = TopicInfo(name, uuid.uuid4(), num_partitions, checked,
                         TopicConfig(checked, self.broker_config))
        self._create_logs(info, range(num_partitions))
        self._register(info)
        try:
            self._write_catalog()
        except OSError as e:
            self.topics.pop(name, None)
            self._by_id.pop(info.topic_id, None)
            self._discard_logs(name, range(num_partitions))
            raise LogCreationError(f"creating topic {name!r} failed: {e}") from None
        return info

    def _create_logs(self, info: TopicInfo, partitions: range) -> None:
        try:
            for p in partitions:
                self._clear_stale_dir(info.name, p)
                self._open_log(info, p, clean=True, recovery_point=None)
        except OSError as e:
            self._discard_logs(info.name, partitions)
            log.warning("creating %d partition(s) of %s failed, removed what was created: %s",
                        len(partitions), info.name, e)
            raise LogCreationError(f"creating partitions of {info.name!r} failed: {e}") from None

    def _discard_logs(self, topic: str, partitions: range) -> None:
        """Undo `_create_logs`: close and remove the new partitions' files (blocking)."""
        for p in partitions:
            plog = self._logs.pop((topic, p), None)
            if plog is not None:
                self._waiting.pop(id(plog), None)
                plog.retire_all()
            shutil.rmtree(self.data_dir / partition_dir_name(topic, p), ignore_errors=True)

    def _clear_stale_dir(self, topic: str, partition: int) -> None:
        # A directory left by a crash between catalog write and creation must not resurface.
        path = self.data_dir / partition_dir_name(topic, partition)
        if path.exists():
            gone = path.with_name(f"{path.name}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}")
            path.rename(gone)
            self.reaper.schedule(lambda: shutil.rmtree(gone, ignore_errors=True), 0)

    def delete_topic(self, name: str) -> None:
        info = self.topics.pop(name, None)
        if info is None:
            raise UnknownTopicError(f"unknown topic {name!r}")
        self._by_id.pop(info.topic_id, None)
        self._write_catalog()
        delay = info.config.get_int("file.delete.delay.ms")
        for p in range(info.num_partitions):
            plog = self._logs.pop((name, p), None)
            if plog is None:
                continue
            self._waiting.pop(id(plog), None)
            segments = plog.retire_all()
            gone = plog.directory.with_name(
                f"{plog.directory.name}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}")
            plog.directory.rename(gone)
            for seg in segments:  # fetch answers still to be sent read them there
                seg.path = gone / seg.path.name
            # Read fds stay open until then, for sends already under way.
            self.reaper.schedule(lambda g=gone, s=segments: _remove_dir(g, s), delay)

    def create_partitions(self, name: str, total: int) -> None:
        info = self.topics.get(name)
        if info is None:
            raise UnknownTopicError(f"unknown topic {name!r}")
        if total <= info.num_partitions:
            raise InvalidPartitionsError(
                f"topic {name!r} has {info.num_partitions} partitions; {total} is not more")
        old = info.num_partitions
        self.check_partition_limit(total - old)
        self._create_logs(info, range(old, total))
        info.num_partitions = total
        try:
            self._write_catalog()
        except OSError as e:
            info.num_partitions = old
            self._discard_logs(name, range(old, total))
            raise LogCreationError(f"adding partitions to {name!r} failed: {e}") from None

    def alter_topic_config(self, name: str, overrides: Mapping[str, str]) -> None:
        info = self.topics.get(name)
        if info is None:
            raise UnknownTopicError(f"unknown topic {name!r}")
        checked = validate_topic_configs(overrides)
        info.overrides = checked
        info.config = TopicConfig(checked, self.broker_config)
        for p in range(info.num_partitions):
            plog = self._logs.get((name, p))
            if plog is not None:
                plog.config = info.config
        self._write_catalog()

    def get_log(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get((topic, partition))

    def all_logs(self) -> Iterator[PartitionLog]:
        return iter(list(self._logs.values()))

    # ---- group commit ----

    async def flush(self, logs: Iterable[PartitionLog]) -> None:
        """Make everything appended so far to `logs` durable; a log whose fsync fails is
        cut back to its recovery point instead (PartitionLog.fail_flush), so callers ask
        PartitionLog.acknowledged whether their append made it.

        One fsync round (one worker-thread job) covers every log waiting when it starts;
        callers arriving during a round join the next one.
        """
        round_done = self.join_round(logs)
        if round_done is None:
            return
        if trace.ENABLED:
            trace.mark("fsync-queued")
            times = await asyncio.shield(round_done)
            if times:
                for stage, at in zip(("round-start", "fsync-start", "fsync-end", "round-end"),
                                     times, strict=True):
                    trace.mark(stage, at)
            trace.mark("flushed")
        else:
            await asyncio.shield(round_done)

    def join_round(self, logs: Iterable[PartitionLog]) -> asyncio.Future[Any] | None:
        """`flush` without a coroutine: queue `logs` for the next fsync round and return that
        round's future (None: no round is due). The future is shared by every caller of the
        round: add a callback or await it shielded, never cancel it. Produce acks=all uses
        this to answer from a callback, without a task per request."""
        for plog in logs:
            if not plog.closed:
                self._waiting[id(plog)] = plog
        if not self._waiting:
            return None
        if self._next_round is None:
            self._next_round = asyncio.get_running_loop().create_future()
            self._next_round.add_done_callback(_consume_exception)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_rounds())
        return self._next_round

    async def _flush_rounds(self) -> None:
        try:
            while self._waiting:
                logs = list(self._waiting.values())
                self._waiting.clear()
                round_done, self._next_round = self._next_round, None
                assert round_done is not None
                times: tuple[float, ...] | None = None
                try:
                    round_start = trace.now()
                    tokens = []
                    for lg in logs:
                        if lg.closed:
                            continue
                        try:
                            token = lg.begin_flush()
                        except OSError as e:  # a file to sync could not be opened
                            lg.fail_flush(e)
                            continue
                        if token is not None:
                            tokens.append(token)
                    if tokens:
                        self.fsync_rounds += 1
                        errors, fsync_start, fsync_end = await self._fsync_thread.run(
                            _run_tokens, tokens)
                        # time in the worker thread: the fsyncs themselves
                        self.flush_stats.seconds.observe(fsync_end - fsync_start)
                        self.flush_stats.logs.observe(len(tokens))
                        now = self._now_ms()
                        for t, error in zip(tokens, errors, strict=True):
                            if t.log.closed:
                                continue
                            if error is None:
                                t.log.complete_flush(t, now)
                            else:  # cut back to the recovery point: nothing acknowledged
                                t.log.fail_flush(error)
                        self._checkpoint_soon()
                        times = (round_start, fsync_start, fsync_end, trace.now())
                except BaseException as exc:
                    if not round_done.done():
                        round_done.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                else:
                    if not round_done.done():
                        round_done.set_result(times)
        finally:
            self._flusher = None

    # ---- background work ----

    async def start(self) -> None:
        if not self._loaded:
            self.load()
        self._tasks = [
            asyncio.create_task(self._policy_loop(), name="nerve-storage-flush-policy"),
            asyncio.create_task(self._retention_loop(), name="nerve-storage-retention"),
            asyncio.create_task(self._producer_expiration_loop(),
                                name="nerve-storage-producer-expiration"),
        ]
        self.cleaner.start()

    async def _policy_loop(self) -> None:
        while True:
            await asyncio.sleep(POLICY_TICK_S)
            try:
                await self.run_policy_once()
            except Exception:
                log.exception("storage flush policy failed")

    async def run_policy_once(self) -> None:
        """One tick: flush logs due under flush.messages / flush.ms, run due deletions."""
        now = self._now_ms()
        due = []
        for key, lg in list(self._dirty.items()):
            if lg.closed:
                del self._dirty[key]
            elif lg.needs_flush(now):
                due.append(lg)
            elif not lg.unflushed_messages():
                del self._dirty[key]  # flushed meanwhile (acks=all, an earlier tick)
        if due:
            await self.flush(due)
        await self.reaper.run_due()

    async def _retention_loop(self) -> None:
        interval = self.broker_config.get_int("log.retention.check.interval.ms") / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                self.apply_retention()
            except Exception:
                log.exception("retention failed")

    async def _producer_expiration_loop(self) -> None:
        interval = self.broker_config.get_int("producer.id.expiration.check.interval.ms") / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                self.remove_expired_producers()
            except Exception:
                log.exception("producer id expiration failed")

    def remove_expired_producers(self) -> int:
        """Kafka's producer.id.expiration.ms for every partition's idempotent producer state."""
        now = self._now_ms()
        expiration = self.broker_config.get_int("producer.id.expiration.ms")
        removed = sum(lg.remove_expired_producers(now, expiration) for lg in self.all_logs())
        if removed:
            log.info("removed %d expired producer id(s) from partition producer state", removed)
        return removed

    def apply_retention(self) -> int:
        now = self._now_ms()
        deleted = 0
        for lg in self.all_logs():
            try:
                deleted += lg.apply_retention(now)
            except OSError as e:  # e.g. the roll of an expired active segment: next check
                log.warning("%s: retention failed: %s", lg.name, e)
        return deleted

    async def stop(self) -> None:
        """Cancel background tasks, flush everything (off the loop), close, mark clean."""
        await self.cleaner.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
        if self._checkpoint_io is not None:  # close() writes the same file: let this finish
            await asyncio.gather(self._checkpoint_io, return_exceptions=True)
        await self.flush(self.all_logs())
        await asyncio.to_thread(self.reaper.run_all_now)
        self.close()

    def close(self) -> None:
        """Synchronous flush + close + clean marker (for non-async shutdown paths)."""
        if self._closed or not self._loaded:
            return
        self._fsync_thread.stop()  # after a round still running: its files stay open
        for plog in self._logs.values():
            plog.close()
        write_file_atomic(self.data_dir / RECOVERY_POINT_FILE, self._recovery_checkpoint_bytes())
        self.reaper.run_all_now()
        # Only the owner may say the directory is consistent (never a second broker).
        if self.lock is not None and self.lock.held:
            write_file_atomic(self.data_dir / CLEAN_SHUTDOWN_FILE, b"")
        self._closed = True
        if self._own_lock and self.lock is not None:
            self.lock.release()

    def remove_clean_marker(self) -> None:
        """For tests that simulate a crash after a clean stop."""
        unlink_quietly(self.data_dir / CLEAN_SHUTDOWN_FILE)


def _remove_dir(path: Path, segments: list[LogSegment]) -> None:
    for seg in segments:
        seg.destroy()
    shutil.rmtree(path, ignore_errors=True)


def _consume_exception(fut: asyncio.Future[None]) -> None:
    # Every caller may have been cancelled; don't warn about an unread round failure.
    if not fut.cancelled():
        with contextlib.suppress(BaseException):
            fut.exception()

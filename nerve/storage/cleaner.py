"""LogCleaner: log compaction for `cleanup.policy=compact` (and `compact,delete`) topics,
Kafka's design (LogCleaner, LogCleanerManager, Cleaner; the record work is cleaner_io.py).

Each of `log.cleaner.threads` cleaner tasks on the event loop picks the filthiest log (the
largest share of dirty bytes: bytes after its first dirty offset, the checkpointed end of the
last pass) whose ratio is past `min.cleanable.dirty.ratio`, or whose oldest dirty record is
older than `max.compaction.lag.ms`; it sleeps `log.cleaner.backoff.ms` when none is. The
cleanable range is the inactive segments below the last stable offset and below the first
segment younger than `min.compaction.lag.ms`.

A pass: capture the segments on the loop -> a worker process (no GIL shared with the broker)
writes `.cleaned` segments and indexes, fsynced -> back on the loop, the hand-back point: if
the captured segments are still the log's (retention, DeleteRecords, a truncation or a topic
deletion meanwhile abandon the pass), for each group rename `.cleaned` -> `.swap` (log
first), retire the old segments (`.deleted`, reaped after file.delete.delay.ms, so fetches
under way finish), rename `.swap` -> final (indexes first, log last) and put the new segment
in the log's list, all in one synchronous step: no fetch, append or retention runs between.
A crash anywhere leaves a log that load() completes or rolls back (cleaner_io.complete_swaps).
The first dirty offsets are kept in `<data dir>/cleaner-offset-checkpoint` (Kafka's format).

`LogCleaner.stats` (a `CleanerStats`) and `metrics()` are the figures for monitoring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nerve
from nerve.storage import cleaner_io
from nerve.storage.cleaner_io import (
    CLEANED_SUFFIX,
    SWAP_SUFFIX,
    CleanResult,
    CleanTask,
    SegmentRef,
    pause,
)
from nerve.storage.files import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    fsync_dir,
    write_file_atomic,
)
from nerve.storage.segment import LogSegment
from nerve.storage.txn_index import TXN_INDEX_SUFFIX, AbortedTxn

if TYPE_CHECKING:
    from nerve.config import BrokerConfig, TopicConfig
    from nerve.storage.log import PartitionLog
    from nerve.storage.log_manager import LogManager

log = logging.getLogger("nerve.cleaner")

CHECKPOINT_FILE = "cleaner-offset-checkpoint"
# The offset map is a Python dict: about this many bytes per key (Kafka's map takes 24), so
# log.cleaner.dedupe.buffer.size bounds its memory as it does Kafka's.
MAP_BYTES_PER_ENTRY = 128
MAP_LOAD_FACTOR = 0.9  # Kafka's log.cleaner.io.buffer.load.factor
_NEVER = 9223372036854775807
_INDEX_SUFFIXES = (INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX)


def is_compacted(config: TopicConfig) -> bool:
    return "compact" in (p.strip() for p in config.get("cleanup.policy").split(","))


@dataclass
class PartitionCleaning:
    """What `nerve topics describe` and the console show for a compacted partition."""

    dirty_ratio: float = 0.0
    first_dirty_offset: int = 0
    cleanable_bytes: int = 0
    last_clean_ms: int = -1
    passes: int = 0
    bytes_reclaimed: int = 0
    last_pass_seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


@dataclass
class CleanerStats:
    passes: int = 0
    abandoned_passes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    bytes_reclaimed: int = 0
    records_read: int = 0
    records_kept: int = 0
    seconds: float = 0.0
    partitions: dict[str, PartitionCleaning] = field(default_factory=dict)


@dataclass
class LogToClean:
    plog: PartitionLog
    ratio: float
    first_dirty: int
    first_uncleanable: int
    segments: list[LogSegment]  # inactive, from the log's first segment
    due: bool  # max.compaction.lag.ms passed


class CleanerWorker:
    """A worker process (cleaner_worker.py): the record-level work runs there, so the
    broker's loop shares no GIL with it. One per cleaner thread, started on first use."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self, task: CleanTask) -> CleanResult:
        if self.proc is None or self.proc.returncode is not None:
            root = str(Path(nerve.__file__).resolve().parent.parent)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nerve.storage.cleaner_worker", str(os.getpid()),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        data = pickle.dumps(task)
        try:
            proc.stdin.write(len(data).to_bytes(4, "big") + data)
            await proc.stdin.drain()
            head = await proc.stdout.readexactly(4)
            kind, value = pickle.loads(await proc.stdout.readexactly(int.from_bytes(head,
                                                                                     "big")))
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self.kill()
            raise WorkerDied(f"the cleaner worker exited ({proc.returncode})") from e
        except BaseException:
            self.kill()  # cancelled mid-task (broker stop): the worker must not go on
            raise
        if kind != "ok":
            raise CleaningFailed(str(value))
        return value

    def kill(self) -> asyncio.subprocess.Process | None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return proc


class WorkerDied(Exception):
    pass


class CleaningFailed(Exception):
    pass


async def _paused(step: str, what: str) -> None:
    """The test hook on the loop: returns at once (without yielding) unless it is set."""
    if pause(step, what):
        await asyncio.sleep(3600)


class LogCleaner:
    def __init__(self, manager: LogManager) -> None:
        self.manager = manager
        config: BrokerConfig = manager.broker_config
        self.enabled = config.get_bool("log.cleaner.enable")
        self.threads = max(config.get_int("log.cleaner.threads"), 1)
        self.backoff_s = config.get_int("log.cleaner.backoff.ms") / 1000
        per_thread = config.get_int("log.cleaner.dedupe.buffer.size") / self.threads
        self.map_capacity = max(int(per_thread * MAP_LOAD_FACTOR / MAP_BYTES_PER_ENTRY), 1)
        self.io_rate = float(config.get("log.cleaner.io.max.bytes.per.second") or 0)
        self.stats = CleanerStats()
        self.checkpoints: dict[tuple[str, int], int] = {}
        self._in_progress: set[tuple[str, int]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._idle: list[CleanerWorker] = []
        self._workers: list[CleanerWorker] = []
        self._wake = asyncio.Event()

    @property
    def checkpoint_path(self) -> Path:
        return self.manager.data_dir / CHECKPOINT_FILE

    # ---- lifecycle ----

    def start(self) -> None:
        self._read_checkpoint()
        if not self.enabled:
            return
        self._tasks = [asyncio.create_task(self._thread(), name=f"nerve-log-cleaner-{i}")
                       for i in range(self.threads)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        procs = [p for w in self._workers if (p := w.kill()) is not None]
        self._workers, self._idle = [], []
        for proc in procs:  # reaped here, not by a finalizer after the loop is gone
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)

    def wake(self) -> None:
        """Look for work now (tests, and after a config change)."""
        self._wake.set()

    def _read_checkpoint(self) -> None:
        try:
            lines = self.checkpoint_path.read_text().splitlines()
            for line in lines[2:]:
                topic, partition, offset = line.split()
                self.checkpoints[(topic, int(partition))] = int(offset)
        except (FileNotFoundError, ValueError):
            pass

    def _checkpoint_bytes(self) -> bytes:
        live = {(lg.topic, lg.partition) for lg in self.manager.all_logs()}
        lines = [f"{t} {p} {o}" for (t, p), o in sorted(self.checkpoints.items())
                 if (t, p) in live]
        return ("\n".join(["0", str(len(lines)), *lines]) + "\n").encode()

    # ---- choosing a log (LogCleanerManager) ----

    def log_to_clean(self, plog: PartitionLog, now_ms: int) -> LogToClean | None:
        """The cleanable state of one compacted log, its dirty ratio (None when the log is
        not compacted or has no inactive segment)."""
        config = plog.config
        if not is_compacted(config) or plog.closed or len(plog.segments) < 2:
            return None
        start = plog.log_start_offset
        first_dirty = self.checkpoints.get((plog.topic, plog.partition), start)
        if not start <= first_dirty <= plog.log_end_offset:
            first_dirty = start  # DeleteRecords passed it, or the log was truncated
        upper = min(plog.active_segment.base_offset, plog.last_stable_offset)
        lag = config.get_int("min.compaction.lag.ms")
        inactive = plog.segments[:-1]
        if lag > 0:
            for seg in inactive:
                if seg.next_offset > first_dirty and seg.largest_timestamp() > now_ms - lag:
                    upper = min(upper, seg.base_offset)
                    break
        segments = [s for s in inactive if s.next_offset <= upper]
        clean = sum(s.size for s in segments if s.next_offset <= first_dirty)
        dirty_segs = [s for s in segments if s.next_offset > first_dirty]
        dirty = sum(s.size for s in dirty_segs)
        ratio = dirty / (clean + dirty) if clean + dirty else 0.0
        max_lag = config.get_int("max.compaction.lag.ms")
        due = bool(dirty and max_lag < _NEVER and dirty_segs[0].rolling_timestamp >= 0
                   and dirty_segs[0].rolling_timestamp < now_ms - max_lag)
        state = self.stats.partitions.setdefault(plog.name, PartitionCleaning())
        state.dirty_ratio, state.first_dirty_offset = round(ratio, 4), first_dirty
        state.cleanable_bytes = dirty
        return LogToClean(plog, ratio, first_dirty, upper, segments, due)

    def filthiest(self, now_ms: int) -> LogToClean | None:
        best = None
        for plog in self.manager.all_logs():
            if (plog.topic, plog.partition) in self._in_progress:
                continue
            ltc = self.log_to_clean(plog, now_ms)
            if ltc is None or not ltc.segments:
                continue
            threshold = float(plog.config.get("min.cleanable.dirty.ratio"))
            if not (ltc.ratio > threshold or (ltc.due and ltc.ratio > 0)):
                continue
            if best is None or ltc.ratio > best.ratio:
                best = ltc
        return best

    # ---- a pass ----

    async def _thread(self) -> None:
        while True:
            try:
                cleaned = await self.clean_filthiest()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("log cleaner pass failed")
                cleaned = False
            if not cleaned:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.backoff_s)

    async def clean_filthiest(self) -> bool:
        """Clean the filthiest log, if any is past its ratio; True if one was cleaned."""
        now = self.manager._now_ms()
        ltc = self.filthiest(now)
        if ltc is None:
            return False
        key = (ltc.plog.topic, ltc.plog.partition)
        self._in_progress.add(key)
        try:
            return await self._clean(ltc, now)
        finally:
            self._in_progress.discard(key)

    def _task(self, ltc: LogToClean, now_ms: int) -> CleanTask:
        plog, config = ltc.plog, ltc.plog.config
        aborted = sorted(((e.producer_id, e.first_offset, e.last_offset, e.last_stable_offset)
                          for entries in plog.txn.aborted.values() for e in entries
                          if e.first_offset < ltc.first_uncleanable), key=lambda e: e[1])
        last_data = {pid: e.batches[-1].last_offset
                     for pid, e in plog.producer_state().items() if e.batches}
        refs = [SegmentRef(s.base_offset, str(s.path), s.size, s.next_offset)
                for s in ltc.segments]
        return CleanTask(plog.name, str(plog.directory), refs, ltc.first_dirty,
                         ltc.first_uncleanable, aborted, last_data, now_ms,
                         config.get_int("delete.retention.ms"), config.segment_bytes,
                         config.index_interval_bytes, config.get_int("segment.index.bytes"),
                         self.map_capacity, self.io_rate / self.threads)

    async def _clean(self, ltc: LogToClean, now_ms: int) -> bool:
        plog = ltc.plog
        task = self._task(ltc, now_ms)
        sizes = [s.size for s in ltc.segments]
        worker = self._idle.pop() if self._idle else CleanerWorker()
        if worker not in self._workers:
            self._workers.append(worker)
        try:
            result = await worker.run(task)
        except WorkerDied as e:
            await asyncio.to_thread(cleaner_io.remove_cleaned, plog.directory)
            log.warning("%s: %s; the pass is retried later", plog.name, e)
            return False
        except CleaningFailed as e:
            await asyncio.to_thread(cleaner_io.remove_cleaned, plog.directory)
            self.stats.abandoned_passes += 1
            log.warning("%s: cleaning failed: %s (the log is unchanged)", plog.name, e)
            return False
        finally:
            self._idle.append(worker)
        await _paused("cleaned", plog.name)
        if not self._still_current(plog, ltc.segments, sizes, result):
            await asyncio.to_thread(cleaner_io.remove_cleaned, plog.directory)
            self.stats.abandoned_passes += 1
            log.info("%s: cleaning pass abandoned: the log changed meanwhile", plog.name)
            return True
        try:
            await self._swap_in(plog, result)
        except OSError as e:
            log.error("%s: swapping in the cleaned segments failed: %s; the next start "
                      "completes or undoes it", plog.name, e)
            return False
        self.checkpoints[(plog.topic, plog.partition)] = result.map_end
        data = self._checkpoint_bytes()
        try:
            await asyncio.to_thread(self._after_swap, plog.directory, data)
        except OSError as e:  # the swap stands; a lost checkpoint only means re-cleaning
            log.warning("writing %s failed: %s", CHECKPOINT_FILE, e)
        self._record(plog, result, now_ms)
        return True

    def _after_swap(self, directory: Path, checkpoint: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):  # a topic deleted meanwhile
            fsync_dir(directory)
        write_file_atomic(self.checkpoint_path, checkpoint)

    def _still_current(self, plog: PartitionLog, captured: list[LogSegment], sizes: list[int],
                       result: CleanResult) -> bool:
        if plog.closed or not is_compacted(plog.config):
            return False
        n = sum(len(g.replaces) for g in result.groups)
        segs = plog.segments
        return (len(segs) > n and all(a is b for a, b in zip(segs[:n], captured[:n],
                                                            strict=True))
                and all(s.size == size and not s.retired
                        for s, size in zip(captured[:n], sizes[:n], strict=True)))

    async def _swap_in(self, plog: PartitionLog, result: CleanResult) -> None:
        """The hand-back point: Kafka's replaceSegments. Nothing in here awaits (unless the
        test hook pauses it), so no fetch, append or retention runs in between."""
        directory = plog.directory
        delay = plog.config.get_int("file.delete.delay.ms")
        for gi, group in enumerate(result.groups):  # group gi becomes segment gi
            stem = f"{group.base:020d}"
            names = [stem + LOG_SUFFIX] + [stem + s for s in _INDEX_SUFFIXES]
            for name in names:  # .cleaned -> .swap, the log first
                src = directory / (name + CLEANED_SUFFIX)
                if src.exists():
                    os.replace(src, directory / (name + SWAP_SUFFIX))
            if gi == 0:
                await _paused("swap", plog.name)
            old = plog.segments[gi:gi + len(group.replaces)]
            assert [s.base_offset for s in old] == group.replaces
            for seg in old:
                seg.retire()
                plog.reaper.schedule(seg.destroy, delay)
                (directory / f"{seg.base_offset:020d}{TXN_INDEX_SUFFIX}").unlink(missing_ok=True)
            if gi == 0:
                await _paused("retired", plog.name)
            for name in [*names[1:], names[0]]:  # .swap -> final, the log last
                src = directory / (name + SWAP_SUFFIX)
                if src.exists():
                    os.replace(src, directory / name)
            nxt = plog.segments[gi + len(group.replaces)].base_offset
            new = LogSegment.open(directory, group.base, plog.config.index_interval_bytes,
                                  next_offset=nxt, handles=plog.handles)
            plog.segments[gi:gi + len(group.replaces)] = [new]
            plog._bases[gi:gi + len(group.replaces)] = [group.base]
            plog._size += group.size - group.old_size
            self._swap_txn_state(plog, group.replaces, group.base, group.aborted)
        plog._dir_version += 1

    @staticmethod
    def _swap_txn_state(plog: PartitionLog, replaced: list[int], base: int,
                        kept: list[tuple[int, int, int, int]]) -> None:
        txn = plog.txn
        for b in replaced:
            txn.aborted.pop(b, None)
            txn._dirty.discard(b)
            if b != base:
                with contextlib.suppress(ValueError):
                    txn._bases.remove(b)
        if kept:
            txn.aborted[base] = [AbortedTxn(*e) for e in kept]

    def _record(self, plog: PartitionLog, result: CleanResult, now_ms: int) -> None:
        s = self.stats
        reclaimed = sum(g.old_size - g.size for g in result.groups)
        s.passes += 1
        s.bytes_read += result.bytes_read
        s.bytes_written += result.bytes_written
        s.bytes_reclaimed += reclaimed
        s.records_read += result.records_read
        s.records_kept += result.records_kept
        s.seconds += result.seconds
        state = s.partitions.setdefault(plog.name, PartitionCleaning())
        state.passes += 1
        state.last_clean_ms = now_ms
        state.bytes_reclaimed += reclaimed
        state.last_pass_seconds = round(result.seconds, 3)
        self.log_to_clean(plog, self.manager._now_ms())  # the ratio after the pass
        log.info("%s: cleaned %d segment(s) into %d: %d -> %d bytes, %d of %d records kept, "
                 "%.2f s; first dirty offset %d", plog.name,
                 sum(len(g.replaces) for g in result.groups), len(result.groups),
                 result.bytes_read, result.bytes_written, result.records_kept,
                 result.records_read, result.seconds, result.map_end)

    # ---- figures ----

    def partition_state(self, topic: str, partition: int) -> dict[str, float | int] | None:
        """The cleaning state of one partition of a compacted topic (None otherwise)."""
        plog = self.manager.get_log(topic, partition)
        if plog is None or not is_compacted(plog.config):
            return None
        self.log_to_clean(plog, self.manager._now_ms())
        state = self.stats.partitions.setdefault(plog.name, PartitionCleaning())
        return state.as_dict()

    def topic_state(self, topic: str) -> list[dict[str, float | int]] | None:
        """partition_state of every partition of `topic` (None: not a compacted topic)."""
        info = self.manager.topics.get(topic)
        if info is None or not is_compacted(info.config):
            return None
        out = []
        for p in range(info.num_partitions):
            state = self.partition_state(topic, p)
            if state is not None:
                out.append({"partition": p, **state})
        return out

    def metrics(self) -> dict[str, object]:
        """Counters for monitoring (nerve/metrics.py reads this): totals, and the dirty ratio
        per partition of the compacted topics."""
        s = self.stats
        return {
            "passes": s.passes, "abandoned_passes": s.abandoned_passes,
            "bytes_read": s.bytes_read, "bytes_written": s.bytes_written,
            "bytes_reclaimed": s.bytes_reclaimed, "records_read": s.records_read,
            "records_kept": s.records_kept, "seconds": round(s.seconds, 3),
            "dirty_ratio": {name: p.dirty_ratio for name, p in s.partitions.items()},
            "partitions": {name: p.as_dict() for name, p in s.partitions.items()},
        }


"""The log cleaner (nerve/storage/cleaner.py, cleaner_io.py): latest value per key kept at its
offset, tombstones gone after delete.retention.ms, aborted data dropped, codecs kept, the last
batch of a producer kept, and every crash state between the steps of a swap recovers."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from nerve.config import BrokerConfig, TopicConfig
from nerve.protocol.records import BATCH_HEADER_SIZE, build_batch, iter_records, read_header
from nerve.storage import PartitionLog, cleaner_io
from nerve.storage.cleaner_io import CLEANED_SUFFIX, SWAP_SUFFIX, CleanTask, SegmentRef
from nerve.storage.log_manager import LogManager

COMPACT = {"cleanup.policy": "compact", "segment.bytes": "1500",
           "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "300",
           "index.interval.bytes": "100"}


def _append(plog: PartitionLog, records, now: int, **kw) -> int:
    buf = bytearray(build_batch(records, timestamp_ms=now, **kw))
    return plog.append(buf, [(0, read_header(buf))], now_ms=now).base_offset


def _contents(plog: PartitionLog) -> dict[bytes, tuple[int, bytes | None]]:
    data = plog.read(plog.log_start_offset, 1 << 30).read_bytes()
    out, pos = {}, 0
    while pos < len(data):
        h = read_header(data, pos)
        batch = data[pos:pos + h.size]
        if h.compression:
            plain = bytearray(batch[:BATCH_HEADER_SIZE])
            plain[22] &= 0xF8
            batch = bytes(plain) + cleaner_io.decompress(h.compression, batch[BATCH_HEADER_SIZE:])
        if not h.is_control:
            for r in iter_records(batch):
                out[r.key] = (r.offset, r.value)
        pos += h.size
    return out


def _workload(plog: PartitionLog, now: int, n: int = 400) -> dict:
    expect = {}
    for i in range(n):
        key = f"k{i % 25}".encode()
        value = None if i % 31 == 0 or (i > n - 20 and i % 4 == 0) else f"v{i}".encode()
        expect[key] = (_append(plog, [(key, value)], now), value)
    plog.roll(now)  # all of it cleanable
    return expect


async def _wait_passes(manager: LogManager, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while manager.cleaner.stats.passes < n:
        assert time.monotonic() < deadline, manager.cleaner.stats
        manager.cleaner.wake()
        await asyncio.sleep(0.05)


@pytest.fixture
async def manager(tmp_path: Path):
    m = LogManager(tmp_path, BrokerConfig({"log.cleaner.backoff.ms": "50"}))
    m.load()
    yield m
    await m.stop()


async def test_keeps_the_latest_record_per_key_at_its_offset(manager: LogManager,
                                                            tmp_path: Path) -> None:
    manager.create_topic("t", 1, COMPACT)
    await manager.start()
    plog = manager.get_log("t", 0)
    now = int(time.time() * 1000)
    expect = _workload(plog, now)
    before = plog.size_bytes
    await _wait_passes(manager, 1)
    assert _contents(plog) == expect  # tombstones are still there (their horizon is set)
    assert plog.size_bytes < before / 4
    state = manager.cleaner.partition_state("t", 0)
    assert state["passes"] >= 1 and state["bytes_reclaimed"] > 0
    assert manager.cleaner.metrics()["bytes_reclaimed"] > 0
    assert not [p for p in os.listdir(plog.directory) if p.endswith((CLEANED_SUFFIX,
                                                                      SWAP_SUFFIX))]
    # The log end, offsets and fetches survive an unclean reopen (gaps are no damage).
    end = plog.log_end_offset
    await manager.stop()
    manager.remove_clean_marker()
    (tmp_path / "recovery-point-offset-checkpoint").unlink()
    again = LogManager(tmp_path, BrokerConfig({}))
    again.load()
    reopened = again.get_log("t", 0)
    assert reopened.log_end_offset == end
    assert _contents(reopened) == expect
    again.close()


async def test_tombstones_go_after_delete_retention(manager: LogManager) -> None:
    manager.create_topic("t", 1, COMPACT)
    await manager.start()
    plog = manager.get_log("t", 0)
    now = int(time.time() * 1000)
    expect = _workload(plog, now)
    await _wait_passes(manager, 1)
    assert any(v is None for _, v in _contents(plog).values())
    await asyncio.sleep(0.4)  # past delete.retention.ms: the next pass drops them
    passes = manager.cleaner.stats.passes
    for i in range(60):
        _append(plog, [(f"other{i % 3}".encode(), b"x" * 20)], int(time.time() * 1000))
    await _wait_passes(manager, passes + 1)
    got = _contents(plog)
    assert {k: v for k, v in got.items() if not k.startswith(b"other")} == \
        {k: v for k, v in expect.items() if v[1] is not None}


async def test_aborted_transactions_are_dropped_markers_kept(manager: LogManager) -> None:
    manager.create_topic("t", 1, {**COMPACT, "delete.retention.ms": "86400000"})
    await manager.start()
    plog = manager.get_log("t", 0)
    now = int(time.time() * 1000)
    committed = _append(plog, [(b"a", b"committed")], now, producer_id=7, producer_epoch=0,
                        base_sequence=0, attributes=0x10)
    plog.append_marker(7, 0, True, now_ms=now)
    _append(plog, [(b"a", b"aborted"), (b"b", b"aborted")], now, producer_id=7,
            producer_epoch=0, base_sequence=1, attributes=0x10)
    plog.append_marker(7, 0, False, now_ms=now)
    plain = _append(plog, [(b"c", b"plain")], now)
    for i in range(40):
        _append(plog, [(b"pad%d" % (i % 2), b"p" * 40)], now)
    plog.roll(now)
    await _wait_passes(manager, 1)
    got = _contents(plog)
    assert got[b"a"] == (committed, b"committed") and got[b"c"] == (plain, b"plain")
    assert b"b" not in got
    data = plog.read(plog.log_start_offset, 1 << 20).read_bytes()
    markers, pos = 0, 0
    while pos < len(data):
        h = read_header(data, pos)
        markers += h.is_control
        pos += h.size
    assert markers == 2  # a marker goes only once its transaction's batches are gone
    assert plog.txn.aborted_between(0, plog.log_end_offset) == [(7, committed + 2)]


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_rebuilt_batches_keep_their_codec(codec: int) -> None:
    records = [(b"k%d" % (i % 3), b"v%d" % i) for i in range(9)]
    plain = build_batch(records, base_offset=100, timestamp_ms=5_000, producer_id=3,
                        producer_epoch=1, base_sequence=40)
    body = cleaner_io.compress(codec, plain[BATCH_HEADER_SIZE:])
    h0 = read_header(plain)
    batch = bytearray(plain[:BATCH_HEADER_SIZE]) + body
    batch[21:23] = (h0.attributes | codec).to_bytes(2, "big")
    batch[8:12] = (len(batch) - 12).to_bytes(4, "big")
    from nerve.protocol.records import compute_crc
    batch[17:21] = compute_crc(batch, 0, len(batch)).to_bytes(4, "big")
    h = read_header(batch)
    omap = {b"k0": 106, b"k1": 107, b"k2": 108}
    task = _task([], now=10_000)
    out = cleaner_io.filter_batch(h, memoryview(bytes(batch)), omap,
                                  cleaner_io._TxnTracker([]), task, cleaner_io.CleanResult())
    nh = read_header(out)
    assert nh.compression == codec and nh.records_count == 3
    assert (nh.base_offset, nh.last_offset, nh.base_sequence) == (100, 108, 40)
    assert compute_crc(out, 0, nh.size) == nh.crc
    plain_out = bytearray(out[:BATCH_HEADER_SIZE])
    plain_out[22] &= 0xF8
    plain_out += cleaner_io.decompress(codec, out[BATCH_HEADER_SIZE:])
    assert [(r.offset, r.key, r.value, r.timestamp) for r in iter_records(bytes(plain_out))] \
        == [(106, b"k0", b"v6", 5_000), (107, b"k1", b"v7", 5_000), (108, b"k2", b"v8", 5_000)]


def test_a_producers_last_batch_stays_as_an_empty_batch() -> None:
    batch = build_batch([(b"k", b"old")], base_offset=5, timestamp_ms=1_000, producer_id=9,
                        producer_epoch=2, base_sequence=11)
    h = read_header(batch)
    task = _task([], now=10_000)
    task.last_data_offsets = {9: 5}
    out = cleaner_io.filter_batch(h, memoryview(batch), {b"k": 20},
                                  cleaner_io._TxnTracker([]), task, cleaner_io.CleanResult())
    nh = read_header(out)
    assert (nh.records_count, nh.size, nh.producer_id, nh.base_sequence, nh.last_offset) == \
        (0, BATCH_HEADER_SIZE, 9, 11, 5)
    task.last_data_offsets = {9: 6}
    assert cleaner_io.filter_batch(h, memoryview(batch), {b"k": 20}, cleaner_io._TxnTracker([]),
                                   task, cleaner_io.CleanResult()) is None


def _task(segments, *, now: int, directory: str = "/nonexistent", first_dirty: int = 0,
          upper: int = 1 << 40) -> CleanTask:
    return CleanTask("t-0", directory, segments, first_dirty, upper, [], {}, now, 300,
                     1 << 30, 100, 1 << 20, 1 << 20, 0.0)


# ---- crash states of a swap (cleaner_io.complete_swaps at load) ----

def _dirty_log(path: Path) -> tuple[PartitionLog, dict]:
    cfg = TopicConfig(COMPACT, BrokerConfig())
    plog = PartitionLog(path, "t", 0, cfg)
    expect = _workload(plog, 1_000_000, 200)
    plog.roll(1_000_000)
    return plog, expect


def _clean_files(plog: PartitionLog) -> cleaner_io.CleanResult:
    segs = plog.segments[:-1]
    refs = [SegmentRef(s.base_offset, str(s.path), s.size, s.next_offset) for s in segs]
    task = _task(refs, now=2_000_000, directory=str(plog.directory),
                 upper=plog.active_segment.base_offset)
    return cleaner_io.clean(task)


@pytest.mark.parametrize("state", ["cleaned", "swap-log-only", "swap", "old-retired",
                                   "index-renamed"])
def test_every_crash_state_of_a_swap_reopens_whole(tmp_path: Path, state: str) -> None:
    plog, expect = _dirty_log(tmp_path / "p")
    end = plog.log_end_offset
    plog.close()
    plog = PartitionLog(tmp_path / "p", "t", 0, plog.config)
    result = _clean_files(plog)
    plog.close()
    d = tmp_path / "p"
    g = result.groups[0]
    stem = f"{g.base:020d}"
    names = [stem + ".log", stem + ".index", stem + ".timeindex"]
    if state != "cleaned":
        os.replace(d / (names[0] + CLEANED_SUFFIX), d / (names[0] + SWAP_SUFFIX))
        if state != "swap-log-only":
            for n in names[1:]:
                if (d / (n + CLEANED_SUFFIX)).exists():
                    os.replace(d / (n + CLEANED_SUFFIX), d / (n + SWAP_SUFFIX))
    if state in ("old-retired", "index-renamed"):
        for base in g.replaces:
            for suffix in (".log", ".index", ".timeindex"):
                p = d / f"{base:020d}{suffix}"
                if p.exists():
                    os.replace(p, p.with_name(p.name + ".deleted"))
    if state == "index-renamed":
        for n in names[1:]:
            if (d / (n + SWAP_SUFFIX)).exists():
                os.replace(d / (n + SWAP_SUFFIX), d / n)
    backup = tmp_path / "copy"
    shutil.copytree(d, backup)
    reopened = PartitionLog(d, "t", 0, plog.config, clean=False, recovery_point=0)
    assert reopened.log_end_offset == end
    assert _contents(reopened) == expect
    leftovers = [p for p in os.listdir(d) if p.endswith((CLEANED_SUFFIX, SWAP_SUFFIX))]
    assert leftovers == []
    swapped = state != "cleaned"
    assert (reopened.size_bytes < plog.size_bytes / 2) == swapped
    bases = [s.base_offset for s in reopened.segments]
    assert bases == sorted(set(bases))  # no duplicate segment
    reopened.close()


async def test_a_topic_deleted_during_a_pass_is_left_alone(manager: LogManager,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    manager.create_topic("t", 1, COMPACT)
    plog = manager.get_log("t", 0)
    _workload(plog, int(time.time() * 1000))
    ltc = manager.cleaner.log_to_clean(plog, int(time.time() * 1000))
    assert ltc is not None and ltc.segments
    manager.delete_topic("t")  # before the worker starts writing: its files have nowhere to go
    assert await manager.cleaner._clean(ltc, int(time.time() * 1000)) is False
    assert manager.cleaner.stats.passes == 0
    assert "Traceback" not in caplog.text

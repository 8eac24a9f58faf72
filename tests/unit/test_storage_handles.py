"""The handle cache: bounded open files, lazy opens, pinned handles outlive eviction."""

from __future__ import annotations

import errno
import gc
import os
from pathlib import Path

import pytest

from nerve.config import BrokerConfig, TopicConfig
from nerve.protocol.records import build_batch, iter_batches
from nerve.storage.handles import CachedFile, HandleCache
from nerve.storage.log import PartitionLog
from nerve.storage.reaper import SegmentReaper


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_cache_keeps_at_most_capacity_open_and_reopens_on_demand(tmp_path: Path) -> None:
    cache = HandleCache(16)
    files = []
    for i in range(40):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([i]) * 10)
        files.append(CachedFile(cache, p))
    before = open_fds()
    for f in files:
        assert os.pread(f.handle().fd, 1, 0) == bytes([files.index(f)])
        gc.collect()
        assert len(cache) <= 16
        assert open_fds() - before <= 16
    assert cache.evictions == 24
    assert not files[0].is_open and files[-1].is_open
    assert os.pread(files[0].handle().fd, 1, 0) == b"\x00"  # reopened
    cache.clear()
    gc.collect()
    assert open_fds() == before


def test_a_held_handle_survives_eviction_and_unlink(tmp_path: Path) -> None:
    cache = HandleCache(16)
    p = tmp_path / "seg"
    p.write_bytes(b"hello")
    pinned = CachedFile(cache, p).handle()
    fd = pinned.fd
    for i in range(20):  # push it out of the cache
        q = tmp_path / f"o{i}"
        q.touch()
        CachedFile(cache, q).handle()
    p.unlink()
    assert fd_is_open(fd)
    assert os.pread(fd, 5, 0) == b"hello"
    del pinned
    assert not fd_is_open(fd)  # the last reference closed it


def test_emfile_sheds_cached_handles_and_retries(tmp_path: Path, monkeypatch) -> None:
    cache = HandleCache(64)
    files = []
    for i in range(20):
        p = tmp_path / f"f{i}"
        p.touch()
        files.append(CachedFile(cache, p))
        files[-1].handle()
    real_open = os.open
    calls = []

    def flaky_open(path, flags, mode=0o777):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", flaky_open)
    extra = CachedFile(cache, tmp_path / "f0")
    assert extra.handle().fd >= 0
    assert len(calls) == 2
    assert len(cache) == 20 - 5 + 1  # a quarter of the idle handles closed


def test_partition_log_with_many_segments_holds_few_files(tmp_path: Path) -> None:
    cache = HandleCache(16)
    config = TopicConfig({"segment.bytes": "2000", "index.interval.bytes": "100"},
                         BrokerConfig())
    reaper = SegmentReaper()
    logs = [PartitionLog(tmp_path / f"t-{i}", "t", i, config, handles=cache, reaper=reaper)
            for i in range(10)]
    for _ in range(30):
        for lg in logs:
            records = bytearray(build_batch([(b"k", b"x" * 200)] * 2, timestamp_ms=1))
            lg.append(records, list(iter_batches(records)), now_ms=1)
    assert all(len(lg.segments) >= 3 for lg in logs)
    gc.collect()
    assert len(cache) <= 16
    # Every segment is still readable: old ones are opened on demand.
    for lg in logs:
        lg.flush()
        regions = lg.read(0, 1 << 20).regions
        assert len(regions) >= 3  # one per segment: regions hold no descriptor
        assert regions[0].read_bytes()[:8] == (0).to_bytes(8, "big")
        gc.collect()
        assert len(cache) <= 16
    for lg in logs:
        lg.close()
    reaper.run_all_now()
    gc.collect()
    assert len(cache) == 0


if __name__ == "__main__":
    pytest.main([__file__])

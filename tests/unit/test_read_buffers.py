"""The fetch send path's pooled read buffers and region reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nerve.server.buffers import BUFFER_GRANULE, ReadBufferPool
from nerve.storage.handles import CachedFile, HandleCache
from nerve.storage.log import FileRegion


def test_acquire_rounds_up_and_reuses_the_released_buffer() -> None:
    pool = ReadBufferPool(max_pooled_bytes=8 * BUFFER_GRANULE)
    buf = pool.acquire(BUFFER_GRANULE + 1)
    assert len(buf) == 2 * BUFFER_GRANULE
    pool.release(buf)
    assert pool.pooled_bytes == 2 * BUFFER_GRANULE
    again = pool.acquire(100)
    assert again is buf
    assert pool.pooled_bytes == 0


def test_acquire_picks_the_smallest_idle_buffer_that_fits() -> None:
    pool = ReadBufferPool(max_pooled_bytes=16 * BUFFER_GRANULE)
    big, small, mid = (pool.acquire(n * BUFFER_GRANULE) for n in (4, 1, 2))
    for b in (big, small, mid):
        pool.release(b)
    assert pool.acquire(BUFFER_GRANULE + 5) is mid
    assert pool.acquire(10) is small
    assert pool.acquire(3 * BUFFER_GRANULE) is big
    fresh = pool.acquire(BUFFER_GRANULE)  # none idle: a new one
    assert all(fresh is not b for b in (big, small, mid))


def test_idle_buffers_stay_under_the_cap() -> None:
    pool = ReadBufferPool(max_pooled_bytes=3 * BUFFER_GRANULE)
    ones = [pool.acquire(1) for _ in range(3)]
    for b in ones:
        pool.release(b)
    assert pool.pooled_bytes == 3 * BUFFER_GRANULE
    # A bigger buffer evicts smaller idle ones to fit...
    two = bytearray(2 * BUFFER_GRANULE)
    pool.release(two)
    assert pool.pooled_bytes == 3 * BUFFER_GRANULE
    assert pool.acquire(2 * BUFFER_GRANULE) is two
    # ...and one over the cap is never kept.
    pool.release(bytearray(4 * BUFFER_GRANULE))
    assert pool.pooled_bytes == BUFFER_GRANULE


def test_region_read_into_fills_exactly_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "seg.log"
    data = os.urandom(3 * BUFFER_GRANULE + 17)
    path.write_bytes(data)
    buf = bytearray(4 * BUFFER_GRANULE)
    view = memoryview(buf)
    FileRegion(CachedFile(HandleCache(), path), 5, 2 * BUFFER_GRANULE).read_into(view[100:])
    assert buf[100:100 + 2 * BUFFER_GRANULE] == data[5:5 + 2 * BUFFER_GRANULE]
    assert buf[:100] == bytes(100)  # nothing written outside the region's slice
    assert buf[100 + 2 * BUFFER_GRANULE] == 0


def test_region_past_the_end_of_its_file_is_an_error_not_a_short_answer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "seg.log"
    path.write_bytes(b"x" * 1000)
    with pytest.raises(EOFError, match="200 bytes before"):
        FileRegion(CachedFile(HandleCache(), path), 0, 1200).read_into(
            memoryview(bytearray(2000)))

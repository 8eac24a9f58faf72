"""The disk's own limit, probed in a few seconds before the brokers run.

A durable broker cannot produce faster than the disk takes appended data with an fsync after
each write, nor answer sooner than one fsync. `probe()` appends `chunk` bytes with `pwrite` +
`fdatasync` to a new file in `directory` (the file system the brokers' data dirs live on) for
`seconds`, the way a log segment grows, and reports the bandwidth and the fdatasync latency;
then the same with 4 KiB writes (the latency floor of one small acks=all produce).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.workloads import Metrics, percentile


def _append_fsync(path: Path, chunk: int, seconds: float) -> tuple[float, list[float]]:
    data = os.urandom(chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    lat: list[float] = []
    written = 0
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            os.pwrite(fd, data, written)
            written += chunk
            t = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
        os.unlink(path)
    return written / elapsed, lat


def probe(directory: Path | None = None, seconds: float = 2.0,
          chunk: int = 256 * 1024) -> Metrics:
    """{fsynced_mb_s, fdatasync_p50_ms, _p99_ms, _max_ms (at `chunk`), small_fdatasync_*}."""
    where = Path(directory or tempfile.gettempdir())
    out: Metrics = {}
    bw, lat = _append_fsync(where / f".nerve-bench-disk-{os.getpid()}", chunk, seconds)
    out["fsynced_mb_s"] = bw / 1e6
    out["fdatasync_p50_ms"] = percentile(lat, 50) * 1e3
    out["fdatasync_p99_ms"] = percentile(lat, 99) * 1e3
    out["fdatasync_max_ms"] = max(lat) * 1e3
    _, small = _append_fsync(where / f".nerve-bench-disk-{os.getpid()}", 4096, seconds / 2)
    out["small_fdatasync_p50_ms"] = percentile(small, 50) * 1e3
    out["small_fdatasync_p99_ms"] = percentile(small, 99) * 1e3
    return out

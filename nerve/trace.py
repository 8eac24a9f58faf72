"""Per-request stage timestamps, for finding where a slow answer waited.

Off unless the environment variable NERVE_TRACE_SLOW_MS is set to a number of milliseconds:
then every request answered later than that after its frame was read is logged (logger
`nerve.trace`, INFO) with the time of each stage since the frame was read, e.g.

    slow Produce 61.2 ms: read 0.0, decode 0.1, append 0.3, fsync-queued 0.3,
    fsync-start 52.7, fsync-end 53.9, answered 61.2

What a stage means is up to the code that marks it (the connection marks `read` and
`answered`; dispatch `decode`; the produce handler and the group commit the rest). Stages are
marked into the current request's list through a context variable, so a task started while
handling a request (a deferred answer, the group commit's flush) marks into the same list.
With tracing on, the event loop's stalls (a callback that ran longer than the threshold / 4)
and garbage collections longer than 1 ms are logged too: a stall delays every answer.

Nothing here imports the rest of nerve.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import os
import time

log = logging.getLogger("nerve.trace")


def _threshold() -> float:
    raw = os.environ.get("NERVE_TRACE_SLOW_MS", "")
    try:
        return float(raw) / 1000 if raw else 0.0
    except ValueError:
        return 0.0


SLOW_S = _threshold()
ENABLED = SLOW_S > 0
now = time.monotonic  # every stamp: comparable across threads

Stages = list[tuple[str, float]]
_current: contextvars.ContextVar[Stages | None] = contextvars.ContextVar(
    "nerve_trace", default=None)


def begin(read_at: float) -> Stages:
    """A new request's stage list, made current (only called when ENABLED)."""
    stages: Stages = [("read", read_at)]
    _current.set(stages)
    return stages


def mark(stage: str, at: float | None = None) -> None:
    """Add a stage to the current request's list (a no-op when tracing is off)."""
    if ENABLED:
        stages = _current.get()
        if stages is not None:
            stages.append((stage, now() if at is None else at))


def name(label: str) -> None:
    """Name the current request (its API), shown in the log line."""
    mark("=" + label, 0.0)


def finish(stages: Stages | None, connection_id: int) -> None:
    """The answer was written: log the stages if it was slow."""
    if stages is None:
        return
    t0 = stages[0][1]
    end = now()
    if end - t0 < SLOW_S:
        return
    label = next((s[1:] for s, _ in stages if s.startswith("=")), "request")
    steps = ", ".join(f"{s} {(t - t0) * 1e3:.1f}" for s, t in stages if not s.startswith("="))
    log.info("slow %s on connection %d, %.1f ms: %s, answered %.1f", label, connection_id,
             (end - t0) * 1e3, steps, (end - t0) * 1e3)


_gc_start = 0.0


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_start
    if phase == "start":
        _gc_start = now()
    else:
        took = now() - _gc_start
        if took >= 0.001:
            log.info("gc generation %d took %.1f ms (%d collected)", info["generation"],
                     took * 1e3, info["collected"])


async def _watch_loop(period: float) -> None:
    """Log the loop's stalls: a sleep of `period` that woke up late by more than it."""
    while True:
        t = now()
        await asyncio.sleep(period)
        late = now() - t - period
        if late >= period:
            log.info("event loop stalled %.1f ms", late * 1e3)


def start_watchers() -> asyncio.Task[None] | None:
    """With tracing on: log GC pauses and loop stalls (call once, on the broker's loop)."""
    if not ENABLED:
        return None
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    log.info("tracing requests slower than %.1f ms (NERVE_TRACE_SLOW_MS)", SLOW_S * 1e3)
    return asyncio.get_running_loop().create_task(_watch_loop(max(SLOW_S / 4, 0.002)),
                                                  name="nerve-trace-loop-watch")

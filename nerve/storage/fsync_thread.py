"""One long-lived thread for the group-commit fsync rounds (LogManager.flush).

`asyncio.to_thread` costs the event loop ~50 us of CPU per call on this project's 2-vCPU
machines (a context copy, an executor future chained to an asyncio future, the executor's
thread bookkeeping), and a produce with acks=all pays one round trip per fsync round. A
thread of our own that takes jobs from a SimpleQueue and hands results back with
`call_soon_threadsafe` costs ~22 us (measured: `python -m bench.request_cost`, and the
figures in docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = None


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the waiter was cancelled meanwhile
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class FsyncThread:
    """Runs blocking jobs in order on one daemon thread, started on first use."""

    def __init__(self, name: str = "nerve-flush") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """`fn(*args)` on the thread; the returned future (of the running loop) gets its
        result or exception."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._start()
        self._jobs.put((loop, fut, fn, args))
        return fut

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name,
                                                daemon=True)
                self._thread.start()

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            loop, fut, fn, args = job
            del job
            try:
                value, ok = fn(*args), True
            except BaseException as e:  # handed to the waiter, as to_thread would
                value, ok = e, False
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, fut, ok, value)
            del loop, fut, fn, args, value

    def stop(self, timeout_s: float = 30.0) -> None:
        """Let queued jobs finish, then end the thread (a later `run` starts a new one)."""
        with self._lock:
            thread = self._thread
            self._thread = None
        if thread is not None and thread.is_alive():
            self._jobs.put(_STOP)
            if thread is not threading.current_thread():
                thread.join(timeout_s)

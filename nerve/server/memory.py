"""The broker's budget for request bytes: Kafka's `queued.max.request.bytes` (its MemoryPool).

Every request frame is counted from the moment its size is known until its handler returns.
A connection whose next frame does not fit stops reading its socket and waits here, in
arrival order; released bytes admit the waiters that then fit. A frame always fits when
nothing else is held, so one request up to `socket.request.max.bytes` is never refused.
Bytes already read off a socket are always taken (one read, at most the broker's read
buffer), so the budget can be passed by that much; the connection then pauses too.
"""

from __future__ import annotations

import collections
from collections.abc import Callable


class RequestMemoryPool:
    def __init__(self, budget: int) -> None:
        self.budget = budget if budget > 0 else None  # Kafka's -1: unbounded
        self.used = 0
        self.peak = 0  # the most held at once (tests and the log read it)
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._large_waiting = 0  # waiters for a frame's bytes (not just for room)

    def _fits(self, size: int) -> bool:
        return self.budget is None or self.used == 0 or self.used + max(size, 1) <= self.budget

    def try_reserve(self, size: int) -> bool:
        """Reserve `size` bytes now, unless they do not fit or others are already waiting."""
        if self._waiters or not self._fits(size):
            return False
        self.take(size)
        return True

    def take(self, size: int) -> None:
        """Count bytes that are already held (read off a socket), fitting or not."""
        self.used += size
        if self.used > self.peak:
            self.peak = self.used

    def should_pause(self) -> bool:
        """True when a reader should stop reading: over budget, or a large frame waits (it
        would never fit while others read on)."""
        return self._large_waiting > 0 or (self.budget is not None and self.used >= self.budget)

    def wait(self, size: int, admitted: Callable[[], None]) -> _Waiter:
        """Queue for `size` bytes (0: for any room); `admitted` runs once they are reserved."""
        waiter = _Waiter(size, admitted)
        self._waiters.append(waiter)
        if size:
            self._large_waiting += 1
        self._admit()
        return waiter

    def cancel(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            if waiter.size:
                self._large_waiting -= 1
            self._admit()

    def release(self, size: int) -> None:
        self.used -= size
        if self._waiters:
            self._admit()

    def _admit(self) -> None:
        admitted = []
        while self._waiters and self._fits(self._waiters[0].size):
            waiter = self._waiters.popleft()
            if waiter.size:
                self._large_waiting -= 1
            self.take(waiter.size)
            admitted.append(waiter)
        for waiter in admitted:  # after the queue is consistent: they may wait again
            waiter.admitted()


class _Waiter:
    __slots__ = ("admitted", "size")

    def __init__(self, size: int, admitted: Callable[[], None]) -> None:
        self.size = size
        self.admitted = admitted

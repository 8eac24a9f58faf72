"""The request memory budget and listen errors, without sockets."""

from __future__ import annotations

import errno
import socket

import pytest

from nerve.server.listener import ListenError, bind
from nerve.server.memory import RequestMemoryPool


def test_pool_admits_in_order_and_never_refuses_a_lone_frame() -> None:
    pool = RequestMemoryPool(100)
    assert pool.try_reserve(150)  # nothing held: the largest frame always fits
    admitted: list[str] = []
    pool.wait(60, lambda: admitted.append("a"))
    assert pool.should_pause()  # a frame waits: small readers pause behind it
    assert not pool.try_reserve(1)  # no barging past a waiter
    pool.wait(0, lambda: admitted.append("room"))
    pool.release(150)
    assert admitted == ["a", "room"] and pool.used == 60
    assert pool.peak == 150
    pool.release(60)
    assert pool.used == 0 and not pool.should_pause()


def test_pool_cancel_and_unbounded() -> None:
    pool = RequestMemoryPool(10)
    pool.take(10)
    assert pool.should_pause()
    w = pool.wait(5, lambda: pytest.fail("cancelled waiter admitted"))
    pool.cancel(w)
    pool.release(10)
    assert pool.used == 0
    free = RequestMemoryPool(-1)
    assert free.try_reserve(1 << 40) and not free.should_pause()


@pytest.mark.parametrize(("exc", "line"), [
    (OSError(errno.EADDRINUSE, "x"), "address already in use (use --port)"),
    (OSError(errno.EACCES, "x"), "permission denied (use --port)"),
    (OSError(errno.EADDRNOTAVAIL, "x"), "cannot assign requested address (use --host)"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
     "name or service not known (use --host)"),
])
def test_listen_errors_are_one_line(exc: BaseException, line: str) -> None:
    assert str(ListenError("h", 1, exc)) == f"cannot listen on h:1: {line}"


def test_bind_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match="address already in use"):
            bind("127.0.0.1", port)

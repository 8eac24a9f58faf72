"""The Kafka listener: binding, accepting within the connection limits, reaping idle ones.

nerve accepts on its own instead of asyncio's `create_server`, for three reasons: a refused
connection (Kafka's `max.connections`, `max.connections.per.ip`) is closed before a transport
or protocol exists for it; an accept that fails for lack of descriptors (EMFILE) backs off and
is logged once a second, where asyncio logs a traceback per failure; and the connection
counts live next to the accept that enforces them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nerve.storage.handles import default_capacity, open_file_limit

if TYPE_CHECKING:
    from nerve.server.connection import KafkaConnection

log = logging.getLogger("nerve.server")

_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_BACKOFF_S = 0.1  # after EMFILE: stop accepting this long, then try again
LOG_INTERVAL_S = 1.0  # accept errors and refusals: at most one line per this interval
_ACCEPT_BATCH = 100  # accepts per readiness event, as asyncio's own loop does
# Descriptors kept back from connections (listener, console, log files beyond the handle
# cache's share, pipes): with the default max.connections, accept never meets EMFILE.
_RESERVED_FDS = 64


class ListenError(Exception):
    """The listener could not bind: one line for the user, with a hint."""

    def __init__(self, host: str, port: int, exc: BaseException) -> None:
        self.host, self.port = host, port
        err = getattr(exc, "errno", None)
        # os.strerror: create_server's message adds the address again; gaierror's codes
        # are not errno values.
        reason = (os.strerror(err) if isinstance(err, int) and err > 0
                  else getattr(exc, "strerror", None) or str(exc))
        hint = "--port" if err in (errno.EADDRINUSE, errno.EACCES) or isinstance(
            exc, OverflowError) else "--host"
        self.reason = reason[:1].lower() + reason[1:]
        super().__init__(f"cannot listen on {host}:{port}: {self.reason} (use {hint})")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or ListenError (port in use, no permission, bad address)."""
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except (OSError, OverflowError) as e:
        raise ListenError(host, port, e) from None
    sock.setblocking(False)
    return sock


def connection_limit(configured: int) -> int:
    """max.connections, bounded by the file limit: each connection holds two descriptors
    (its socket and a dup for direct writes) and the segment handle cache takes half."""
    soft = open_file_limit()[0]
    by_fds = max((soft - default_capacity(soft) - _RESERVED_FDS) // 2, 1)
    return max(min(configured, by_fds), 0)


class _RateLimited:
    """Log a kind of event at most once per interval, with how many were not logged."""

    def __init__(self) -> None:
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, now: float, level: int, msg: str, *args: object) -> None:
        if now < self._next:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last such line)" if self._suppressed else ""
        log.log(level, msg + more, *args)
        self._suppressed = 0
        self._next = now + LOG_INTERVAL_S


class Listener:
    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], KafkaConnection],
        connections: set[KafkaConnection],
        *,
        max_connections: int,
        max_connections_per_ip: int,
        idle_ms: int,
        security: Any = None,
    ) -> None:
        self.sock = sock
        self.security = security  # nerve.security.sasl.ListenerSecurity (TLS context, SASL)
        self._factory = factory
        self._connections = connections
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.idle_s = idle_ms / 1000 if idle_ms > 0 else None
        self.count = 0
        self.per_ip: Counter[str] = Counter()
        self.refused = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._log_refused = {"total": _RateLimited(), "ip": _RateLimited()}
        self._log_accept_error = _RateLimited()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._resume_accepting()
        if self.idle_s is not None:
            self._reaper = self._loop.create_task(self._reap_idle(self.idle_s))

    def close(self) -> None:
        """Stop accepting (connections already accepted stay until the broker closes them)."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        if self._accepting and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._accepting = False
        if self._reaper is not None:
            self._reaper.cancel()
        self.sock.close()

    def _resume_accepting(self) -> None:
        self._retry = None
        if not self._closed and not self._accepting and self._loop is not None:
            self._loop.add_reader(self.sock.fileno(), self._accept_ready)
            self._accepting = True

    def _accept_ready(self) -> None:
        loop = self._loop
        assert loop is not None
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno in _OUT_OF_RESOURCES:
                    # The listening socket stays readable: stop watching it for a while.
                    loop.remove_reader(self.sock.fileno())
                    self._accepting = False
                    self._retry = loop.call_later(ACCEPT_BACKOFF_S, self._resume_accepting)
                    self._log_accept_error(
                        loop.time(), logging.ERROR,
                        "cannot accept connections: %s; retrying every %d ms",
                        e.strerror or e, ACCEPT_BACKOFF_S * 1000)
                else:
                    self._log_accept_error(loop.time(), logging.ERROR,
                                           "accept failed: %s", e.strerror or e)
                return
            ip = addr[0] if isinstance(addr, tuple) else str(addr)
            if self.count >= self.max_connections:
                self._refuse(conn, ip, "total",
                             f"max.connections ({self.max_connections}) reached")
                continue
            if self.per_ip[ip] >= self.max_connections_per_ip:
                self._refuse(conn, ip, "ip", f"max.connections.per.ip "
                                       f"({self.max_connections_per_ip}) reached")
                continue
            self.count += 1
            self.per_ip[ip] += 1
            loop.create_task(self._connect(conn, ip))

    def _refuse(self, conn: socket.socket, ip: str, kind: str, why: str) -> None:
        conn.close()
        self.refused += 1
        assert self._loop is not None
        self._log_refused[kind](self._loop.time(), logging.WARNING,
                          "refused a connection from %s: %s", ip, why)

    async def _connect(self, conn: socket.socket, ip: str) -> None:
        assert self._loop is not None
        protocol = self._factory()
        protocol.on_lost = lambda: self._lost(ip)
        try:
            conn.setblocking(False)
            # Kafka's SocketServer sets TCP_NODELAY; asyncio sets it only on sockets whose
            # proto is IPPROTO_TCP, and accept() on socket.create_server's gives proto 0.
            # Without it a small answer written while the previous one is unacknowledged
            # waits for the client's delayed ACK (~40 ms): every pipelined request paid it.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sec = self.security
            if sec is not None and sec.tls:
                # A failed handshake (untrusted or expired certificate, not TLS at all) ends
                # here as an ssl.SSLError: one line, the client sees its TLS alert.
                await self._loop.connect_accepted_socket(
                    lambda: protocol, sock=conn, ssl=sec.ssl_context,
                    ssl_handshake_timeout=10.0)
            else:
                await self._loop.connect_accepted_socket(lambda: protocol, sock=conn)
        except (OSError, TimeoutError) as e:
            conn.close()
            if protocol.on_lost is not None:
                protocol.on_lost = None
                self._lost(ip)
            log.warning("connection from %s failed before it started: %s", ip, e)

    def _lost(self, ip: str) -> None:
        self.count -= 1
        left = self.per_ip[ip] - 1
        if left > 0:
            self.per_ip[ip] = left
        else:
            del self.per_ip[ip]

    async def _reap_idle(self, idle_s: float) -> None:
        """Close connections that neither completed a request nor got an answer written for
        connections.max.idle.ms (a request being handled, such as a long-polling Fetch, or a
        connection waiting for the memory budget, is not idle). A client trickling a request
        it never finishes is idle."""
        loop = asyncio.get_running_loop()
        period = min(max(idle_s / 10, 0.05), 1.0)
        while True:
            await asyncio.sleep(period)
            deadline = loop.time() - idle_s
            for conn in list(self._connections):
                if conn.last_active < deadline and not conn.busy:
                    conn.close_idle(idle_s)

"""Serving the console: on the broker's event loop (`nerve serve`) or on its own (`nerve console`).

uvicorn's `Server.serve()` replaces the process's SIGINT/SIGTERM handlers; inside `nerve serve`
the broker owns those signals (graceful shutdown), so the embedded server skips that part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from nerve.tools.base import ToolError

if TYPE_CHECKING:
    from nerve.broker import Broker
    from nerve.tools.kafka import Cluster

log = logging.getLogger("nerve.console")


class _ConsoleServer(uvicorn.Server):
    def handle_exit(self, sig: int, frame: object) -> None:
        self.config.app.state.shutdown()  # end the SSE streams first
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


class _EmbeddedServer(_ConsoleServer):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the broker handles signals and stops us


class ConsoleHandle:
    def __init__(self, server: _EmbeddedServer, task: asyncio.Task[None], url: str,
                 cluster: Cluster) -> None:
        self.server = server
        self.task = task
        self.url = url
        self.cluster = cluster

    async def stop(self) -> None:
        self.server.config.app.state.shutdown()
        self.server.should_exit = True
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self.task, 3)
        if not self.task.done():
            self.task.cancel()
        await asyncio.to_thread(self.cluster.close)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _config(app: object, **kw: object) -> uvicorn.Config:
    return uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning",
                          timeout_graceful_shutdown=1, **kw)  # type: ignore[arg-type]


def _warn_open(host: str, read_only: bool, password: str | None) -> None:
    from nerve.console.guard import is_loopback

    if read_only and not password and not is_loopback(host):
        log.warning("web console on %s without a password: anyone who reaches it can read "
                    "every topic's messages (--console-password)", host)


async def start_embedded(broker: Broker, host: str, port: int, read_only: bool,
                         password: str | None = None,
                         allowed: tuple[str, ...] = ()) -> ConsoleHandle | None:
    """Serve the console on this loop, talking to `broker` over the Kafka protocol.

    A console that cannot bind its port is logged and skipped: the broker matters more.
    """
    from nerve.console import accounting
    from nerve.console.app import create_app
    from nerve.console.guard import allowed_hosts
    from nerve.tools.kafka import Cluster

    kafka_host = "127.0.0.1" if broker.host in ("0.0.0.0", "", "::") else broker.host
    cluster = Cluster(f"{kafka_host}:{broker.port}", client_id="nerve-console")
    try:
        sock = _bind(host, port)
    except OSError as e:
        log.warning("web console not started: cannot listen on %s:%s (%s); "
                    "use --console-port or --no-console", host, port, e.strerror or e)
        return None
    bound = sock.getsockname()[1]
    _warn_open(host, read_only, password)
    app = create_app(cluster, read_only=read_only,
                     accounting=lambda: accounting.of(broker.core),
                     cleaning=lambda topic: broker.core.logs.cleaner.topic_state(topic),
                     hosts=allowed_hosts(host, allowed), password=password)
    server = _EmbeddedServer(_config(app))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        log.warning("web console failed to start: %r", task.exception())
        return None
    url = f"http://{host}:{bound}"
    print(f"nerve console on {url}{' (read-only)' if read_only else ''}", flush=True)
    return ConsoleHandle(server, task, url, cluster)


def run_standalone(cluster: Cluster, host: str, port: int, read_only: bool,
                   password: str | None = None, allowed: tuple[str, ...] = ()) -> None:
    """`nerve console`: run until Ctrl-C, for any Kafka cluster."""
    from nerve.console.app import create_app
    from nerve.console.guard import allowed_hosts, refusal

    if (why := refusal(host, read_only, password)) is not None:
        raise ToolError(why.replace("--console-", "--"))
    _warn_open(host, read_only, password)
    app = create_app(cluster, read_only=read_only, accounting=lambda: None,
                     hosts=allowed_hosts(host, allowed), password=password)
    try:
        sock = _bind(host, port)
    except OSError as e:
        raise ToolError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    print(f"nerve console for {cluster.bootstrap} on http://{host}:{sock.getsockname()[1]}"
          f"{' (read-only)' if read_only else ''}", flush=True)
    sys.stdout.flush()
    _ConsoleServer(_config(app)).run(sockets=[sock])

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
from typing import TYPE_CHECKING, Any

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


def _embedded_cluster(broker: Broker, listener: str | None, mechanisms: tuple[str, ...],
                      read_only_users: frozenset[str], session_timeout_s: float
                      ) -> tuple[Any, Any]:
    """The Cluster the embedded console talks to, and its Logins when it logs people in.

    The listener: `listener` if named, else the first SASL_PLAINTEXT one (each person logs in
    with their own user and the console is that principal), else the first PLAINTEXT one
    (one anonymous client, as without security). TLS listeners are not used: the console is
    in the broker's process, so a loopback SASL_PLAINTEXT listener serves it.
    """
    from nerve.console.auth import Logins, LoginSettings, SessionCluster
    from nerve.tools.kafka import Cluster

    specs = broker.listeners
    if listener is not None:
        chosen = next((s for s in specs if s.name == listener.upper()), None)
        if chosen is None:
            raise ToolError(f"--console-listener {listener}: no such listener (the broker has "
                            f"{', '.join(s.name for s in specs)})")
    else:
        chosen = next((s for s in specs if s.protocol == "SASL_PLAINTEXT"), None) or next(
            (s for s in specs if s.protocol == "PLAINTEXT"), None)
    if chosen is None or chosen.protocol not in ("PLAINTEXT", "SASL_PLAINTEXT"):
        raise ToolError("the embedded console connects over PLAINTEXT or SASL_PLAINTEXT: add "
                        "a loopback listener such as SASL_PLAINTEXT://127.0.0.1:9095 (or use "
                        "--no-console and `nerve console --command-config`)")
    from nerve.console.guard import is_loopback

    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(chosen.host, chosen.host)
    bootstrap = f"[{host}]:{chosen.port}" if ":" in host else f"{host}:{chosen.port}"
    if chosen.protocol == "PLAINTEXT":
        if any(s.protocol.startswith("SASL_") for s in specs):
            log.warning("web console: listener %s is PLAINTEXT, so the console is one "
                        "anonymous client (User:ANONYMOUS); a SASL_PLAINTEXT listener on "
                        "loopback gives it a login per user", chosen.name)
        if read_only_users:
            log.warning("web console: --console-read-only-users has no effect: listener %s "
                        "is PLAINTEXT, so nobody logs in", chosen.name)
        return Cluster(bootstrap, client_id="nerve-console"), None
    if not is_loopback(host):
        log.warning("web console: listener %s is not on loopback: logins cross the network "
                    "in clear text", chosen.name)
    offered = mechanisms or broker.sasl_mechanisms(chosen.name)
    settings = LoginSettings.from_client_config(
        bootstrap, {"security.protocol": "SASL_PLAINTEXT"}, offered,
        read_only_users=read_only_users, idle_timeout_s=session_timeout_s)
    logins = Logins(settings)
    return SessionCluster(logins), logins


async def start_embedded(broker: Broker, host: str, port: int, read_only: bool,
                         password: str | None = None,
                         allowed: tuple[str, ...] = (), listener: str | None = None,
                         mechanisms: tuple[str, ...] = (),
                         read_only_users: frozenset[str] = frozenset(),
                         session_timeout_s: float = 1800.0) -> ConsoleHandle | None:
    """Serve the console on this loop, talking to `broker` over the Kafka protocol.

    A console that cannot bind its port is logged and skipped: the broker matters more.
    """
    from nerve.console import accounting
    from nerve.console.app import create_app
    from nerve.console.guard import allowed_hosts

    try:
        cluster, logins = _embedded_cluster(broker, listener, mechanisms, read_only_users,
                                            session_timeout_s)
    except ToolError as e:
        log.warning("web console not started: %s", e)
        return None
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
                     hosts=allowed_hosts(host, allowed), password=password, logins=logins)
    server = _EmbeddedServer(_config(app))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        log.warning("web console failed to start: %r", task.exception())
        return None
    url = f"http://{host}:{bound}"
    login = f" (login: SASL on {cluster.bootstrap})" if logins is not None else ""
    print(f"nerve console on {url}{' (read-only)' if read_only else ''}{login}", flush=True)
    return ConsoleHandle(server, task, url, cluster)


def run_standalone(cluster: Cluster, host: str, port: int, read_only: bool,
                   password: str | None = None, allowed: tuple[str, ...] = (),
                   logins: Any = None) -> None:
    """`nerve console`: run until Ctrl-C, for any Kafka cluster (`logins`: a cluster that
    requires SASL, each person logging in as themselves; `cluster` is then a SessionCluster)."""
    from nerve.console.app import create_app
    from nerve.console.guard import allowed_hosts, refusal

    # A console with logins has a password per person.
    if logins is None and (why := refusal(host, read_only, password)) is not None:
        raise ToolError(why.replace("--console-", "--"))
    if logins is None:
        _warn_open(host, read_only, password)
    app = create_app(cluster, read_only=read_only, accounting=lambda: None,
                     hosts=allowed_hosts(host, allowed), password=password, logins=logins)
    try:
        sock = _bind(host, port)
    except OSError as e:
        raise ToolError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    print(f"nerve console for {cluster.bootstrap} on http://{host}:{sock.getsockname()[1]}"
          f"{' (read-only)' if read_only else ''}", flush=True)
    sys.stdout.flush()
    _ConsoleServer(_config(app)).run(sockets=[sock])

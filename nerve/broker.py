"""Composition root: storage, coordinators, handlers and the server, wired together.

`BrokerCore` holds the broker's state (owned by its event loop). `Broker` is the embeddable
object: `async with Broker(...)`, `with Broker(...)` (runs its own loop in a thread), or
`await broker.serve_forever()` as `nerve serve` does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from nerve import __version__, heap, trace
from nerve.config import BrokerConfig
from nerve.coordinator.producers import ProducerIdManager
from nerve.handlers import load_handlers
from nerve.handlers.dispatch import Dispatcher
from nerve.security.acl import Authorizer
from nerve.security.credentials import CredentialStore
from nerve.security.listeners import ListenerSpec, parse_listeners, security_for
from nerve.server.buffers import ReadBufferPool
from nerve.server.connection import READ_BUFFER_BYTES, KafkaConnection
from nerve.server.listener import Listener, bind, connection_limit
from nerve.server.memory import RequestMemoryPool
from nerve.stats import BrokerStats
from nerve.storage.handles import default_capacity, raise_open_file_limit, shared_cache
from nerve.storage.lock import DataDirLock
from nerve.storage.log_manager import LogManager

log = logging.getLogger("nerve")


def _load_meta(data_dir: Path, node_id: int) -> str:
    """Read or create meta.properties (Kafka's name), which holds the cluster id."""
    path = data_dir / "meta.properties"
    props: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                props[key.strip()] = value.strip()
    if "cluster.id" in props:
        return props["cluster.id"]
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n")
    os.replace(tmp, path)
    return cluster_id


class PartitionWaiters:
    """Long-poll support: Fetch waits here; appends wake the waiters of that partition."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, int], set[asyncio.Future[None]]] = defaultdict(set)

    def notify(self, topic: str, partition: int) -> None:
        waiters = self._waiters.pop((topic, partition), None)
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def wait_any(self, keys: list[tuple[str, int]], timeout_s: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key in keys:
            self._waiters[key].add(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            pass
        finally:
            for key in keys:
                s = self._waiters.get(key)
                if s is not None:
                    s.discard(fut)
                    if not s:
                        del self._waiters[key]


class BrokerCore:
    """Everything a handler may reach: config, logs, coordinators, identity."""

    def __init__(
        self,
        data_dir: Path,
        config: BrokerConfig,
        *,
        advertised_host: str,
        advertised_port: int,
        lock: DataDirLock | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self.node_id = config.get_int("node.id")
        self.advertised_host = advertised_host
        self.advertised_port = advertised_port
        # One owner per data dir, before anything in it is read (DataDirLockedError if
        # another broker has it). Released by the caller after logs.stop().
        self.lock = lock if lock is not None else DataDirLock.acquire(data_dir)
        self.cluster_id = _load_meta(data_dir, self.node_id)
        # Listener name -> the (host, port) its clients are told (Metadata, FindCoordinator,
        # DescribeCluster answer each client with the addresses of the listener it came in on).
        self.endpoints: dict[str, tuple[str, int]] = {"PLAINTEXT": (advertised_host,
                                                                    advertised_port)}
        self.credentials = CredentialStore(data_dir).load()  # SCRAM users (nerve/security)
        self.logs = LogManager(data_dir, config, lock=self.lock)
        self.producer_ids = ProducerIdManager(data_dir / "producer-id-block")
        # None unless authorizer.class.name is set: then every handler checks ACLs.
        self.authorizer = Authorizer.from_config(data_dir, config)
        self.waiters = PartitionWaiters()
        self.stats = BrokerStats()  # read by nerve/metrics.py
        self.started_at_ms = time.time_ns() // 1_000_000
        self.groups: Any = None  # the GroupCoordinator, attached when groups are enabled
        self.extensions: dict[str, Any] = {}

    def load(self) -> None:
        self.logs.load()

    def endpoint(self, listener_name: str) -> tuple[str, int]:
        """The advertised (host, port) of `listener_name` (the first listener's if unknown)."""
        found = self.endpoints.get(listener_name)
        return found if found is not None else (self.advertised_host, self.advertised_port)

    def auto_create_topics(self) -> bool:
        return self.config.get_bool("auto.create.topics.enable")


class Broker:
    """An embeddable nerve broker.

    >>> async with Broker(data_dir=tmp, port=0) as broker:
    ...     use(broker.bootstrap_servers)
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = "nerve-data",
        *,
        host: str = "127.0.0.1",
        port: int = 9092,
        advertised_host: str | None = None,
        node_id: int | None = None,
        config: BrokerConfig | dict[str, str] | None = None,
    ) -> None:
        if isinstance(config, dict) or config is None:
            config = BrokerConfig(dict(config or {}))
        if node_id is not None:
            config.overrides["node.id"] = str(node_id)
        self.config = config
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.advertised_host = advertised_host
        self.core: BrokerCore | None = None
        self._server: Listener | None = None
        self._trace_watch: asyncio.Task[None] | None = None
        self._servers: list[Listener] = []
        self.listeners: list[ListenerSpec] = []
        self._security: list[Any] = []
        self.memory: RequestMemoryPool | None = None
        self._connections: set[KafkaConnection] = set()
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._stopped = asyncio.Event()
        # The data dir first (a second broker is refused before it binds or reads anything),
        # then the socket, so that port 0 resolves to the port clients are then told about.
        specs = parse_listeners(self.config, self.host, self.port, self.advertised_host)
        lock = DataDirLock.acquire(self.data_dir)
        socks = []
        try:
            for spec in specs:
                sock = bind(spec.host, spec.port)  # ListenError: one line for `nerve serve`
                socks.append(sock)
                spec.port = sock.getsockname()[1]
        except BaseException:
            for sock in socks:
                sock.close()
            lock.release()
            raise
        self.listeners = specs
        # The first listener is the one `host`/`port` name (and the console connects to).
        self.host, self.port = specs[0].host, specs[0].port
        # Handler modules register the start hooks of the subsystems they use (groups, ...).
        load_handlers()
        before, after = raise_open_file_limit()
        shared_cache().resize(default_capacity(after))
        log.info("open file limit %d%s", after,
                 f" (raised from {before}, the hard limit)" if after > before else "")
        try:
            first = specs[0]
            core = BrokerCore(
                self.data_dir,
                self.config,
                advertised_host=first.advertised_host or first.host,
                advertised_port=first.advertised_port or first.port,
                lock=lock,
            )
            core.endpoints = {s.name: (s.advertised_host or s.host, s.advertised_port or s.port)
                              for s in specs}
            self._security = [security_for(self.config, s, core.credentials) for s in specs]
            core.load()
            await core.logs.start()
            for hook in _START_HOOKS:
                await hook(core)
        except BaseException:
            for sock in socks:
                sock.close()
            lock.release()
            raise
        self.core = core
        dispatcher = Dispatcher(core)
        cfg = self.config
        max_frame = cfg.get_int("socket.request.max.bytes")
        # Shared by this broker's connections (one event loop): buffers for fetch answers,
        # the request memory budget, the one read buffer every socket is read into.
        buffers = ReadBufferPool()
        self.memory = memory = RequestMemoryPool(cfg.get_int("queued.max.request.bytes"))
        read_buffer = bytearray(READ_BUFFER_BYTES)
        self._servers = []
        for i, (sock, security) in enumerate(zip(socks, self._security, strict=True)):
            listener = Listener(
                sock,
                lambda sec=security: KafkaConnection(dispatcher, max_frame, self._connections,
                                                     buffers, memory, read_buffer, sec),
                self._connections,
                max_connections=connection_limit(cfg.get_int("max.connections")),
                max_connections_per_ip=cfg.get_int("max.connections.per.ip"),
                # One reaper for all connections (they share one set).
                idle_ms=cfg.get_int("connections.max.idle.ms") if i == 0 else -1,
                security=security,
            )
            listener.start()
            self._servers.append(listener)
        self._server = self._servers[0]
        heap.settle("start-up")  # the broker's long-lived objects: out of the GC's way
        self._trace_watch = trace.start_watchers()  # NERVE_TRACE_SLOW_MS only

    def sasl_mechanisms(self, listener: str) -> tuple[str, ...]:
        """The SASL mechanisms a listener enables (the embedded console's login offers them)."""
        for spec, sec in zip(self.listeners, self._security, strict=False):
            if spec.name == listener:
                return tuple(sec.mechanisms)
        return ()

    def reload_tls(self) -> None:
        """Rebuild every TLS listener's SSLContext from its files (SIGHUP): new connections
        get the new certificates; a listener whose material fails to load keeps the old."""
        from nerve.config import ConfigError
        from nerve.security.tls import server_context

        for sec in self._security:
            if not sec.tls:
                continue
            try:
                sec.ssl_context = server_context(
                    lambda key, name=sec.name: self.config.for_listener(name, key), sec.name)
            except ConfigError as e:
                log.error("TLS reload of listener %s failed, keeping the old certificates: %s",
                          sec.name, e)
            else:
                log.info("listener %s: TLS certificates reloaded", sec.name)

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Graceful shutdown: stop accepting, answer what is in flight, flush, close files."""
        if self._server is None:
            return
        for listener in self._servers:
            listener.close()
        if self._trace_watch is not None:
            self._trace_watch.cancel()
        try:
            if self.core is not None:
                for hook in _DRAIN_HOOKS:
                    await hook(self.core)
            conns = list(self._connections)
            idle = [c.idle.wait() for c in conns]
            if idle:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*idle), drain_timeout_s)
            await asyncio.gather(*(c.shutdown() for c in conns))
            self._server = None
            if self.core is not None:
                for hook in _STOP_HOOKS:
                    await hook(self.core)
                await self.core.logs.stop()
        finally:
            if self.core is not None:
                self.core.lock.release()
            # Even when the final flush fails (disk gone), serve_forever() must return: the
            # process then exits with the error instead of hanging after SIGTERM.
            if self._stopped is not None:
                self._stopped.set()

    async def serve_forever(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- synchronous use: the broker runs its own event loop in a thread
    def __enter__(self) -> Broker:
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as e:
                error.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_until_complete(self.serve_forever())
            loop.close()

        self._thread = threading.Thread(target=run, name="nerve-broker", daemon=True)
        self._thread.start()
        ready.wait()
        if error:
            raise error[0]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread_loop is not None and self._thread is not None:
            fut = asyncio.run_coroutine_threadsafe(self.stop(), self._thread_loop)
            fut.result(timeout=30)
            self._thread.join(timeout=30)


# Optional subsystems (consumer groups, ...) register start/stop hooks here so the broker
# does not need to know them; each receives the BrokerCore.
_START_HOOKS: list[Any] = []
_STOP_HOOKS: list[Any] = []
_DRAIN_HOOKS: list[Any] = []


def on_start(fn: Any) -> Any:
    _START_HOOKS.append(fn)
    return fn


def on_drain(fn: Any) -> Any:
    """Runs when shutdown starts, before in-flight requests are drained (release waiters)."""
    _DRAIN_HOOKS.append(fn)
    return fn


def on_stop(fn: Any) -> Any:
    _STOP_HOOKS.append(fn)
    return fn


__all__ = ["Broker", "BrokerCore", "__version__", "on_drain", "on_start", "on_stop"]

"""The API registry: one handler module per Kafka API, each registered with `@api`.

A handler is `async def handle(ctx, request) -> response`, where `request` is the kio request
object for the negotiated version and the response is a kio response object, a `RawResponse`
(pre-encoded body parts, for the hot paths), or None (no response: Produce with acks=0).
Handlers never touch sockets. ApiVersions is generated from this registry.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nerve.protocol.framing import RequestHeader

if TYPE_CHECKING:
    from nerve.broker import BrokerCore
    from nerve.storage.log import FileRegion

Handler = Callable[["RequestContext", Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ApiSpec:
    key: int
    name: str
    min_version: int
    max_version: int
    handler: Handler
    # Produce advertises 0 while refusing 0-2: librdkafka < 2.11.1 disables compression when
    # Produce's advertised minimum is above 0.
    advertised_min: int
    # False: the handler receives the raw frame (memoryview from the body offset) instead of a
    # kio object; for APIs whose request we decode by hand.
    decode: bool = True


REGISTRY: dict[int, ApiSpec] = {}


def api(
    key: int, name: str, min_version: int, max_version: int, *,
    advertised_min: int | None = None, decode: bool = True,
) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if key in REGISTRY:
            raise RuntimeError(f"API key {key} registered twice")
        REGISTRY[key] = ApiSpec(
            key, name, min_version, max_version, fn,
            min_version if advertised_min is None else advertised_min, decode,
        )
        return fn

    return register


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A response body already encoded: bytes and file regions, sent in order."""

    parts: list[bytes | FileRegion]


@dataclass(frozen=True, slots=True)
class DeferredResponse:
    """A response that exists once `ready` completes (Produce acks=all waiting for its fsync).

    The connection meanwhile goes on handling the next requests, so one group-commit fsync can
    cover several requests of the same connection; answers still leave in request order.
    `ready` resolves to what a handler would have returned (a kio response or RawResponse);
    when it is an asyncio Future, the dispatcher encodes the answer from its done-callback
    (no task per request).
    """

    ready: Awaitable[Any]


@dataclass(slots=True)
class RequestContext:
    broker: BrokerCore
    header: RequestHeader
    client_host: str
    client_port: int
    connection_id: int
    # Who is asking (Kafka's KafkaPrincipal string form) and through which listener: set by
    # the connection once SASL or the TLS client certificate has authenticated it.
    principal: str = "User:ANONYMOUS"
    listener_name: str = "PLAINTEXT"
    security_protocol: str = "PLAINTEXT"
    # Set by a handler whose client is over its quota: the answer says so (throttle_time_ms)
    # and the connection reads nothing more for that long, as Kafka mutes the channel.
    throttle_ms: int = 0
    # The connection's nerve.security.sasl.SaslSession (None: a plain PLAINTEXT connection):
    # SaslHandshake/SaslAuthenticate drive it; the connection acts on what it then says.
    session: Any = None

    @property
    def version(self) -> int:
        return self.header.api_version

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000


_loaded = False


def load_handlers() -> dict[int, ApiSpec]:
    """Import every `kNN_*` module in this package so their `@api` registrations run."""
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            if mod.name.startswith("k") and mod.name[1:3].isdigit():
                importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True
    return REGISTRY

"""Request codec -> handler -> response codec, for one frame at a time.

The server hands in frames and gets back the bytes (and file regions) to send; it never knows
what an API means. Anything malformed raises `CloseConnection`: Kafka closes the connection on
a request it cannot parse, and so do we, after one log line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
from typing import TYPE_CHECKING, Any

from kio.serial.errors import SerialError

from nerve import trace
from nerve.handlers import DeferredResponse, RawResponse, RequestContext, load_handlers
from nerve.protocol import messages
from nerve.protocol.bounds import scanner
from nerve.protocol.framing import (
    FramingError,
    parse_request_header,
    peek_api,
    response_header,
)

if TYPE_CHECKING:
    from nerve.broker import BrokerCore
    from nerve.storage.log import FileRegion

log = logging.getLogger("nerve.requests")

API_VERSIONS_KEY = 18
Parts = list["bytes | FileRegion"]
_I32 = struct.Struct(">i")


class CloseConnection(Exception):
    """The connection must be closed; the message says why (logged once by the server)."""


class Dispatcher:
    def __init__(self, broker: BrokerCore) -> None:
        self.broker = broker
        self.registry = load_handlers()
        self.stats = broker.stats
        # connection id -> ms its next request must wait (a quota throttle); see take_mute.
        self._mutes: dict[int, int] = {}

    def take_mute(self, connection_id: int) -> float:
        """Seconds the connection must stay muted after its last answer (0: none)."""
        return self._mutes.pop(connection_id, 0) / 1000.0 if self._mutes else 0.0

    async def handle(
        self, frame: bytes | memoryview, client_host: str, client_port: int, connection_id: int,
        session: Any = None,
    ) -> Parts | asyncio.Future[Parts | None] | None:
        """The response's parts, None for no response, or a future of either (deferred)."""
        try:
            api_key, api_version, correlation_id = peek_api(frame)
        except FramingError as e:
            raise CloseConnection(str(e)) from None
        if session is not None and (refusal := session.refusal(api_key)) is not None:
            raise CloseConnection(refusal)  # before authentication, as Kafka: no answer
        spec = self.registry.get(api_key)
        if spec is None:
            raise CloseConnection(f"unknown API key {api_key}")
        if not spec.min_version <= api_version <= spec.max_version:
            if api_key == API_VERSIONS_KEY:
                # KIP-511: an unknown ApiVersions version gets a v0 body with error 35 and our
                # real ranges, so the client can retry with a version we speak.
                return self._api_versions_fallback(correlation_id)
            raise CloseConnection(
                f"unsupported version {api_version} of {spec.name} (key {api_key}); "
                f"supported {spec.min_version}-{spec.max_version}"
            )
        flexible = messages.is_flexible(api_key, api_version)
        try:
            header = parse_request_header(frame, flexible=flexible)
            if spec.decode:
                # Every length and count is checked against the frame before kio allocates
                # for it (kio would abort the process on a 4 GiB array claim).
                scanner(api_key, api_version)(frame, header.body_offset)
                request: Any = messages.decode_request(
                    api_key, api_version, frame, header.body_offset
                )
            else:
                request = memoryview(frame)[header.body_offset :]
        except (FramingError, ValueError, KeyError, IndexError, TypeError, UnicodeError,
                SerialError) as e:
            # MalformedRequest (bounds) and kio's own errors: Kafka closes the connection on a
            # request it cannot parse, with no answer.
            raise CloseConnection(
                f"malformed {spec.name} v{api_version} request: {type(e).__name__}: {e}"
            ) from None
        ctx = RequestContext(self.broker, header, client_host, client_port, connection_id)
        if session is not None:
            ctx.principal = session.principal
            ctx.listener_name = session.listener_name
            ctx.security_protocol = session.security_protocol
            ctx.session = session
        if trace.ENABLED:
            trace.name(spec.name)
            trace.mark("decoded")
        started = time.perf_counter()
        try:
            response = await spec.handler(ctx, request)
            if ctx.throttle_ms > 0:
                self._mutes[connection_id] = ctx.throttle_ms
            if trace.ENABLED:
                trace.mark("handled")
            # ApiVersions answers always use response header v0 (clients parse it before they
            # know whether the broker speaks flexible versions).
            flexible_header = flexible and api_key != API_VERSIONS_KEY
            if isinstance(response, DeferredResponse):
                ready = response.ready
                if isinstance(ready, asyncio.Future):  # encoded from its callback, no task
                    out: asyncio.Future[Parts | None] = ready.get_loop().create_future()
                    ready.add_done_callback(functools.partial(
                        self._encode_when_ready, out, correlation_id, flexible_header,
                        api_key, api_version, started))
                    return out
                return asyncio.ensure_future(
                    self._encode_later(response, correlation_id, flexible_header, api_key,
                                       api_version, started)
                )
            self._observe(api_key, api_version, started, response)
            return self._encode(response, correlation_id, flexible_header)
        except Exception as e:
            self.stats.request(api_key, api_version, time.perf_counter() - started, True)
            # A nerve bug: its traceback (logged by the server) names the request.
            e.add_note(f"while handling {spec.name} v{api_version} from {client_host}")
            raise

    def _observe(self, api_key: int, api_version: int, started: float, response: Any) -> None:
        # An error is a top-level error code (per-partition codes are not walked: O(1)).
        code = getattr(response, "error_code", None)
        self.stats.request(api_key, api_version, time.perf_counter() - started,
                           code is not None and int(code) != 0)

    async def _encode_later(
        self, deferred: DeferredResponse, correlation_id: int, flexible_header: bool,
        api_key: int, api_version: int, started: float,
    ) -> Parts | None:
        response = await deferred.ready
        self._observe(api_key, api_version, started, response)
        return self._encode(response, correlation_id, flexible_header)

    def _encode_when_ready(
        self, out: asyncio.Future[Parts | None], correlation_id: int, flexible_header: bool,
        api_key: int, api_version: int, started: float, ready: asyncio.Future[Any],
    ) -> None:
        if out.done():  # the connection closed and dropped it
            return
        if ready.cancelled():
            out.cancel()
            return
        error = ready.exception()
        if error is not None:
            out.set_exception(error)
            return
        try:
            response = ready.result()
            self._observe(api_key, api_version, started, response)
            out.set_result(self._encode(response, correlation_id, flexible_header))
        except Exception as e:  # a nerve bug: the connection logs it and closes
            out.set_exception(e)

    @staticmethod
    def _encode(response: Any, correlation_id: int, flexible_header: bool) -> Parts | None:
        if response is None:
            return None
        head = response_header(correlation_id, flexible=flexible_header)
        if isinstance(response, RawResponse):
            parts: list[bytes | FileRegion] = [head, *response.parts]
        else:
            parts = [head, messages.encode_response(response)]
        size = sum(len(p) if isinstance(p, bytes | bytearray) else p.size for p in parts)
        parts.insert(0, _I32.pack(size))
        return parts

    def _api_versions_fallback(self, correlation_id: int) -> Parts:
        from nerve.handlers.k18_api_versions import api_versions_response

        parts = self._encode(api_versions_response(0, error_code=35), correlation_id, False)
        assert parts is not None
        return parts

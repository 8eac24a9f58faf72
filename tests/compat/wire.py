"""A tiny blocking Kafka client for raw requests (kio types), used by the differential tests.

    with WireClient(broker.bootstrap) as c:
        resp = c.call(0, 9, transactional_id=None, acks=-1, timeout=5000, topic_data=[...])

Requests are built with nerve's `build` (kio dataclasses from plain dicts), so the same bytes go
to nerve and to Apache Kafka; what differs is only what each broker answers.
"""

from __future__ import annotations

import io
import socket
import struct
from types import TracebackType
from typing import Any

from kio.serial import entity_reader, entity_writer

from nerve.protocol.messages import build, request_class, response_class

CLIENT_ID = b"nerve-compat"


class WireClient:
    def __init__(self, bootstrap: str, timeout: float = 15.0) -> None:
        host, port = bootstrap.split(",")[0].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.correlation_id = 0
        self.client_id = CLIENT_ID

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf

    def call(self, api_key: int, version: int, body: Any = None, /, **fields: Any) -> Any:
        """Send one request (a kio object, or fields for `build`) and decode the response."""
        req_cls = request_class(api_key, version)
        if body is None:
            body = build(req_cls, fields)
        self.correlation_id += 1
        flexible = bool(req_cls.__flexible__)
        header = struct.pack(">hhih", api_key, version, self.correlation_id, len(self.client_id))
        header += self.client_id + (b"\x00" if flexible else b"")  # header v2: empty tagged fields
        out = io.BytesIO()
        entity_writer(req_cls)(out, body)
        payload = header + out.getvalue()
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        (size,) = struct.unpack(">i", self._exact(4))
        frame = self._exact(size)
        (corr,) = struct.unpack_from(">i", frame)
        assert corr == self.correlation_id, (corr, self.correlation_id)
        # Response header v1 (flexible) adds an empty tagged-field byte; ApiVersions never does.
        offset = 5 if flexible and api_key != 18 else 4
        resp, _ = entity_reader(response_class(api_key, version))(frame, offset)
        return resp


def call(bootstrap: str, api_key: int, version: int, /, **fields: Any) -> Any:
    with WireClient(bootstrap) as c:
        return c.call(api_key, version, **fields)

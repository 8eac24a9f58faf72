"""Sans-IO framing: size-prefixed Kafka frames in, request headers out; responses to bytes.

`FrameDecoder.receive_data(bytes)` buffers input; `next_frame()` returns one complete request
frame (without its 4-byte size) or None. It never owns a socket, so it is tested with bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_HEADER = struct.Struct(">hhi")  # api_key, api_version, correlation_id


class FramingError(ValueError):
    """The peer broke the framing rules; the connection must be closed."""


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body_offset: int  # where the body starts in the frame


class FrameDecoder:
    """Splits a byte stream into frames; refuses frames above `max_frame_bytes`."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> bytes | None:
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 4:
            self._compact()
            return None
        (size,) = _I32.unpack_from(buf, pos)
        if size < 0 or size > self.max_frame_bytes:
            raise FramingError(
                f"frame of {size} bytes is outside 0..{self.max_frame_bytes} "
                "(socket.request.max.bytes)"
            )
        end = pos + 4 + size
        if len(buf) < end:
            self._compact()
            return None
        frame = bytes(buf[pos + 4 : end])
        self._pos = end
        if self._pos == len(buf):
            buf.clear()
            self._pos = 0
        return frame

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0


def _skip_tagged_fields(frame: bytes | memoryview, pos: int) -> int:
    count, pos = read_uvarint(frame, pos)
    for _ in range(count):
        _tag, pos = read_uvarint(frame, pos)
        size, pos = read_uvarint(frame, pos)
        pos += size
    if pos > len(frame):
        raise FramingError("tagged fields run past the end of the frame")
    return pos


def read_uvarint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise FramingError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise FramingError("varint too long")


def parse_request_header(frame: bytes | memoryview, *, flexible: bool) -> RequestHeader:
    """Request header v1 (or v2 when `flexible`: the same plus tagged fields).

    client_id stays a classic int16-length string even in header v2.
    """
    if len(frame) < 10:
        raise FramingError(f"request header needs 10 bytes, frame has {len(frame)}")
    api_key, api_version, correlation_id = _HEADER.unpack_from(frame, 0)
    (n,) = _I16.unpack_from(frame, 8)
    pos = 10
    client_id: str | None = None
    if n >= 0:
        if pos + n > len(frame):
            raise FramingError("client_id runs past the end of the frame")
        client_id = str(frame[pos : pos + n], "utf-8", "replace")
        pos += n
    if flexible:
        pos = _skip_tagged_fields(frame, pos)
    return RequestHeader(api_key, api_version, correlation_id, client_id, pos)


def peek_api(frame: bytes | memoryview) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) without parsing the rest."""
    if len(frame) < 8:
        raise FramingError(f"request header needs 8 bytes, frame has {len(frame)}")
    return _HEADER.unpack_from(frame, 0)


def response_header(correlation_id: int, *, flexible: bool) -> bytes:
    """Response header v0 (correlation id) or v1 (plus an empty tagged-field section)."""
    return _I32.pack(correlation_id) + (b"\x00" if flexible else b"")

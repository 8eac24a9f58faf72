"""Hand-written encoders for the hot path: the Produce and Fetch responses.

kio's pure-Python writers cost 20-40 us per response; a Fetch response is mostly record bytes
the broker sends straight from segment files, so it is encoded here as a list of small header
byte strings interleaved with opaque record parts (bytes or file regions with a `.size`),
which the connection sends in order without copying the records.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_FETCH_TOP = struct.Struct(">ihi")  # throttle_time_ms, error_code, session_id (v7+)
_PART_V4 = struct.Struct(">ihqq")  # partition, error, high_watermark, last_stable_offset
_I64 = struct.Struct(">q")


class Sized(Protocol):
    size: int


_SMALL_UVARINTS = [bytes((i,)) for i in range(128)]


def uvarint(value: int) -> bytes:
    if value < 128:
        return _SMALL_UVARINTS[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass(slots=True)
class FetchPartitionData:
    partition: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    records: Sequence[Any]  # bytes or regions with .size
    records_size: int
    aborted_transactions: list[tuple[int, int]] | None = None


def encode_fetch_response(
    version: int,
    topics: Sequence[tuple[str | uuid.UUID, Sequence[FetchPartitionData]]],
    *,
    throttle_time_ms: int = 0,
    error_code: int = 0,
    session_id: int = 0,
) -> list[Any]:
    """FetchResponse body for versions 4-16 (flexible from 12, topic ids from 13)."""
    flexible = version >= 12
    parts: list[Any] = []
    buf = bytearray()
    if version >= 7:
        buf += _FETCH_TOP.pack(throttle_time_ms, error_code, session_id)
    else:
        buf += _I32.pack(throttle_time_ms)
    buf += uvarint(len(topics) + 1) if flexible else _I32.pack(len(topics))
    for topic, partitions in topics:
        if version >= 13:
            assert isinstance(topic, uuid.UUID)
            buf += topic.bytes
        else:
            assert isinstance(topic, str)
            name = topic.encode()
            buf += uvarint(len(name) + 1) if flexible else _I16.pack(len(name))
            buf += name
        buf += uvarint(len(partitions) + 1) if flexible else _I32.pack(len(partitions))
        for p in partitions:
            buf += _PART_V4.pack(p.partition, p.error_code, p.high_watermark,
                                 p.last_stable_offset)
            if version >= 5:
                buf += _I64.pack(p.log_start_offset)
            aborted = p.aborted_transactions
            if aborted is None:
                buf += b"\x00" if flexible else _I32.pack(-1)
            else:
                buf += uvarint(len(aborted) + 1) if flexible else _I32.pack(len(aborted))
                for producer_id, first_offset in aborted:
                    buf += _I64.pack(producer_id) + _I64.pack(first_offset)
                    if flexible:
                        buf += b"\x00"
            if version >= 11:
                buf += _I32.pack(-1)  # preferred_read_replica
            size = p.records_size
            buf += uvarint(size + 1) if flexible else _I32.pack(size)
            if size:
                parts.append(bytes(buf))
                buf = bytearray()
                parts.extend(p.records)
            if flexible:
                buf += b"\x00"  # partition tagged fields
        if flexible:
            buf += b"\x00"  # topic tagged fields
    if flexible:
        buf += b"\x00"
    parts.append(bytes(buf))
    return parts


@dataclass(slots=True)
class ProducePartitionResult:
    index: int
    error_code: int
    base_offset: int = -1
    log_append_time: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    # (batch index, message) per refused record (v8+), e.g. keyless records on a compacted topic
    record_errors: tuple[tuple[int, str | None], ...] = ()


_PRODUCE_PART = struct.Struct(">ihqq")  # index, error_code, base_offset, log_append_time_ms


def _string(buf: bytearray, value: str | None, flexible: bool, nullable: bool) -> None:
    if value is None:
        assert nullable
        buf += b"\x00" if flexible else _I16.pack(-1)
        return
    raw = value.encode()
    buf += uvarint(len(raw) + 1) if flexible else _I16.pack(len(raw))
    buf += raw


def encode_produce_response(
    version: int,
    topics: Sequence[tuple[str, Sequence[ProducePartitionResult]]],
    *,
    throttle_time_ms: int = 0,
) -> bytes:
    """ProduceResponse body for versions 3-11 (flexible from 9).

    kio's writer costs ~100 us for this response; produce is the hottest request there is.
    """
    flexible = version >= 9
    buf = bytearray()
    buf += uvarint(len(topics) + 1) if flexible else _I32.pack(len(topics))
    for name, partitions in topics:
        _string(buf, name, flexible, nullable=False)
        buf += uvarint(len(partitions) + 1) if flexible else _I32.pack(len(partitions))
        for p in partitions:
            buf += _PRODUCE_PART.pack(p.index, p.error_code, p.base_offset, p.log_append_time)
            if version >= 5:
                buf += _I64.pack(p.log_start_offset)
            if version >= 8:
                errors = p.record_errors
                buf += uvarint(len(errors) + 1) if flexible else _I32.pack(len(errors))
                for batch_index, message in errors:
                    buf += _I32.pack(batch_index)
                    _string(buf, message, flexible, nullable=True)
                    if flexible:
                        buf += b"\x00"
                _string(buf, p.error_message, flexible, nullable=True)
            if flexible:
                buf += b"\x00"
        if flexible:
            buf += b"\x00"
    buf += _I32.pack(throttle_time_ms)
    if flexible:
        buf += b"\x00"
    return bytes(buf)

"""Framing and request-header parsing, driven by bytes alone."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nerve.protocol.framing import (
    FrameDecoder,
    FramingError,
    parse_request_header,
    read_uvarint,
    response_header,
)
from nerve.protocol.messages import decode_request


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def test_frames_split_across_reads() -> None:
    dec = FrameDecoder(1024)
    data = frame(b"abc") + frame(b"") + frame(b"hello")
    got = []
    for i in range(len(data)):
        dec.receive_data(data[i : i + 1])
        while (f := dec.next_frame()) is not None:
            got.append(f)
    assert got == [b"abc", b"", b"hello"]
    assert dec.buffered == 0


def test_oversize_frame_is_refused_before_it_is_buffered() -> None:
    dec = FrameDecoder(100)
    dec.receive_data(struct.pack(">i", 101))
    with pytest.raises(FramingError, match=r"socket\.request\.max\.bytes"):
        dec.next_frame()


def test_negative_size_is_refused() -> None:
    dec = FrameDecoder(100)
    dec.receive_data(struct.pack(">i", -5))
    with pytest.raises(FramingError):
        dec.next_frame()


# The first frame confluent-kafka 2.16.1 (librdkafka 2.16.0) sent, captured off a loopback
# socket: ApiVersions v3 with header v2 (client id "golden"), then a flexible body carrying
# client_software_name and client_software_version.
LIBRDKAFKA_API_VERSIONS_V3 = bytes.fromhex(
    "00120003000000010006676f6c64656e0017636f6e666c75656e742d6b61666b612d707974686f6e16322e"
    "31362e312d72646b61666b612d322e31362e3000"
)


def test_header_v2_golden_bytes() -> None:
    h = parse_request_header(LIBRDKAFKA_API_VERSIONS_V3, flexible=True)
    assert (h.api_key, h.api_version, h.correlation_id, h.client_id) == (18, 3, 1, "golden")
    body = decode_request(18, 3, LIBRDKAFKA_API_VERSIONS_V3, h.body_offset)
    assert body.client_software_name == "confluent-kafka-python"
    assert body.client_software_version == "2.16.1-rdkafka-2.16.0"


def test_header_skips_unknown_tagged_fields() -> None:
    raw = bytes.fromhex("00030009" "0000002a" "ffff" "02" "05" "01" "aa" "07" "00") + b"BODY"
    h = parse_request_header(raw, flexible=True)
    assert h.client_id is None
    assert raw[h.body_offset :] == b"BODY"


def test_truncated_header_is_refused() -> None:
    with pytest.raises(FramingError):
        parse_request_header(bytes.fromhex("0003000900"), flexible=False)
    with pytest.raises(FramingError):
        parse_request_header(bytes.fromhex("00030009" "00000001" "0010" "61"), flexible=False)


def test_response_headers() -> None:
    assert response_header(7, flexible=False) == b"\x00\x00\x00\x07"
    assert response_header(7, flexible=True) == b"\x00\x00\x00\x07\x00"


@given(st.integers(0, 2**28 - 1))
def test_uvarint_round_trip(n: int) -> None:
    from nerve.protocol.fastcodec import uvarint

    enc = uvarint(n)
    assert read_uvarint(enc, 0) == (n, len(enc))


@given(st.binary(max_size=64))
def test_garbage_headers_raise_framing_error_or_parse(data: bytes) -> None:
    try:
        h = parse_request_header(data, flexible=True)
    except FramingError:
        return
    assert 0 <= h.body_offset <= len(data)

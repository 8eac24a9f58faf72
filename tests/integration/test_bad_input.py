"""Bad input gets a clear error or a closed connection; everyone else keeps being served."""

from __future__ import annotations

import io
import socket
import struct

import pytest
from confluent_kafka import Consumer, TopicPartition
from kio.serial import entity_reader, entity_writer

from nerve.protocol import records as rb
from nerve.protocol.messages import build, request_class, response_class
from tests.integration.test_produce_consume import create_topic, rdk_consume, rdk_produce


def connect(bootstrap: str) -> socket.socket:
    host, port = bootstrap.split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def request_frame(api_key: int, version: int, correlation_id: int, body: object) -> bytes:
    flexible = request_class(api_key, version).__flexible__
    header = struct.pack(">hhih", api_key, version, correlation_id, 4) + b"test"
    if flexible:
        header += b"\x00"
    out = io.BytesIO()
    entity_writer(type(body))(out, body)
    payload = header + out.getvalue()
    return struct.pack(">i", len(payload)) + payload


def read_frame(s: socket.socket) -> bytes:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    (size,) = struct.unpack(">i", exact(4))
    return exact(size)


def is_closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def produce_raw(bootstrap: str, topic: str, batch: bytes, version: int = 9):
    req = build(request_class(0, version), transactional_id=None, acks=-1, timeout=5000,
                topic_data=[{"name": topic,
                             "partition_data": [{"index": 0, "records": batch}]}])
    with connect(bootstrap) as s:
        s.sendall(request_frame(0, version, 7, req))
        frame = read_frame(s)
    assert struct.unpack_from(">i", frame)[0] == 7
    resp, _ = entity_reader(response_class(0, version))(frame, 5 if version >= 9 else 4)
    return resp.responses[0].partition_responses[0]


def test_bad_crc_is_corrupt_message_and_nothing_is_stored(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    batch = bytearray(rb.build_batch([(b"k", b"v")]))
    batch[-1] ^= 0xFF
    part = produce_raw(nerve.bootstrap, topic, bytes(batch))
    assert part.error_code == 2  # CORRUPT_MESSAGE
    good = produce_raw(nerve.bootstrap, topic, rb.build_batch([(b"k", b"ok")]))
    assert (good.error_code, good.base_offset) == (0, 0)


def test_old_magic_is_invalid_record(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    batch = bytearray(rb.build_batch([(b"k", b"v")]))
    batch[rb.MAGIC_OFFSET] = 1
    assert produce_raw(nerve.bootstrap, topic, bytes(batch)).error_code == 87  # INVALID_RECORD


def test_two_batches_in_one_partition_is_invalid_record(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    two = rb.build_batch([(None, b"a")]) + rb.build_batch([(None, b"b")])
    assert produce_raw(nerve.bootstrap, topic, two).error_code == 87


def test_produce_to_unknown_partition(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    req = build(request_class(0, 7), transactional_id=None, acks=1, timeout=5000,
                topic_data=[{"name": topic, "partition_data": [
                    {"index": 5, "records": rb.build_batch([(None, b"x")])}]}])
    with connect(nerve.bootstrap) as s:
        s.sendall(request_frame(0, 7, 1, req))
        frame = read_frame(s)
    resp, _ = entity_reader(response_class(0, 7))(frame, 4)
    assert resp.responses[0].partition_responses[0].error_code == 3


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack(">i", 200 * 1024 * 1024),  # frame over socket.request.max.bytes
        struct.pack(">i", 3) + b"\x00\x03\x00",  # a frame too short for a header
        struct.pack(">i", 10) + struct.pack(">hhih", 999, 0, 1, -1),  # unknown API key
        struct.pack(">i", 10) + struct.pack(">hhih", 3, 99, 1, -1),  # unsupported version
        struct.pack(">i", 14) + struct.pack(">hhih", 3, 9, 1, -1) + b"\xff\xff\xff\xff",
    ],
    ids=["oversize", "truncated-header", "unknown-api", "bad-version", "malformed-body"],
)
def test_bad_frames_close_only_that_connection(nerve, unique_topic, garbage):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    # A consumer connected before, and still served after.
    c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": "bystander"})
    c.assign([TopicPartition(topic, 0, 0)])
    c.poll(0.5)
    with connect(nerve.bootstrap) as s:
        s.sendall(garbage)
        assert is_closed(s)
    rdk_produce(nerve.bootstrap, topic, [b"still-here"])
    msg = None
    for _ in range(20):
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            break
    c.close()
    assert msg is not None and msg.value() == b"still-here"
    assert "closing connection" in nerve.log_text()


def test_api_versions_unknown_version_gets_error_35_and_ranges(nerve):
    with connect(nerve.bootstrap) as s:
        payload = struct.pack(">hhih", 18, 99, 42, -1) + b"\x00" * 8
        s.sendall(struct.pack(">i", len(payload)) + payload)
        frame = read_frame(s)
    assert struct.unpack_from(">i", frame)[0] == 42
    resp, _ = entity_reader(response_class(18, 0))(frame, 4)
    assert resp.error_code == 35
    keys = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert keys[18] == (0, 4)
    assert keys[0] == (0, 11)


def test_acks_zero_gets_no_response_but_is_stored(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    req = build(request_class(0, 9), transactional_id=None, acks=0, timeout=5000,
                topic_data=[{"name": topic, "partition_data": [
                    {"index": 0, "records": rb.build_batch([(None, b"fire-and-forget")])}]}])
    md = build(request_class(3, 9), topics=[], allow_auto_topic_creation=False,
               include_topic_authorized_operations=False)
    with connect(nerve.bootstrap) as s:
        s.sendall(request_frame(0, 9, 1, req) + request_frame(3, 9, 2, md))
        frame = read_frame(s)
    # The first answer on the wire is the Metadata one: acks=0 produced no response.
    assert struct.unpack_from(">i", frame)[0] == 2
    got = rdk_consume(nerve.bootstrap, topic, 1)
    assert got[0][2] == b"fire-and-forget"

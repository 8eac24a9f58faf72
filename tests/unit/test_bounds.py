"""Properties of the bounds pre-scan (nerve/protocol/bounds.py) for every served API version.

The scan must accept everything kio writes and end exactly where kio's reader ends, refuse
every truncation, and refuse any length or count that claims more than the frame holds, so
that what it lets through never makes kio allocate more than the frame could hold.
"""

from __future__ import annotations

import datetime
import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError
from kio.static.primitive import Records, i64Timedelta

from nerve.handlers import load_handlers
from nerve.protocol.bounds import MalformedRequest, check_request, scanner
from nerve.protocol.messages import request_class

st.register_type_strategy(Records, st.binary(max_size=64).map(Records))
st.register_type_strategy(
    i64Timedelta,
    st.integers(-(2**40), 2**40).map(
        lambda n: i64Timedelta.parse(datetime.timedelta(milliseconds=n))
    ),
)

VERSIONS = [
    (key, v)
    for key, spec in sorted(load_handlers().items())
    for v in range(spec.min_version, spec.max_version + 1)
]
BOMBS = [b"\xff\xff\xff\xff\x0f", b"\xff\xff\xff\xff\x07", b"\x7f\xff\xff\xff",
         b"\xff\xff\xff\xfe", b"\x10\x00\x00\x00", b"\x7f\xff", b"\xff\xfe", b"\x00"]


def encode(obj: object) -> bytes:
    out = io.BytesIO()
    entity_writer(type(obj))(out, obj)
    return out.getvalue()


def scan_or_none(api_key: int, version: int, body: bytes) -> int | None:
    try:
        return check_request(api_key, version, body, 0)
    except MalformedRequest:
        return None


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_valid_bodies_pass_and_end_where_kio_ends(data):
    api_key, version = data.draw(st.sampled_from(VERSIONS))
    cls = request_class(api_key, version)
    body = encode(data.draw(st.from_type(cls)))
    padded = b"\x00\x01\x02" + body + b"trailing"  # an offset and bytes after: both allowed
    end = check_request(api_key, version, padded, 3)
    _value, size = entity_reader(cls)(padded, 3)
    assert end == 3 + size == 3 + len(body)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_truncation_is_refused(data):
    api_key, version = data.draw(st.sampled_from(VERSIONS))
    body = encode(data.draw(st.from_type(request_class(api_key, version))))
    if not body:
        return  # ApiVersions v0-2: an empty body has nothing to cut
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(MalformedRequest):
        check_request(api_key, version, body[:cut], 0)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_what_passes_the_scan_decodes_within_the_frame(data):
    api_key, version = data.draw(st.sampled_from(VERSIONS))
    """Length bombs and bit flips: whatever the scan accepts, kio reads inside the frame.

    A bomb that slipped through would make kio try to allocate gigabytes (the process aborts,
    failing this test run loudly); a passed body must also never read past its end.
    """
    cls = request_class(api_key, version)
    body = bytearray(encode(data.draw(st.from_type(cls))))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, max(len(body) - 1, 0)))
        if data.draw(st.booleans()):
            bomb = data.draw(st.sampled_from(BOMBS))
            body[at : at + len(bomb)] = bomb
        elif body:
            body[at] ^= 1 << data.draw(st.integers(0, 7))
    end = scan_or_none(api_key, version, bytes(body))
    if end is None:
        return
    assert end <= len(body)
    try:
        _value, size = entity_reader(cls)(bytes(body), 0)
    except (SerialError, ValueError, UnicodeError, KeyError):
        # Refused by kio for another reason (bad UTF-8, a bool of 7, an unknown tag: kio
        # raises KeyError where Kafka skips unknown tagged fields): closed, also bounded.
        return
    assert size == end


@pytest.mark.parametrize(
    ("api_key", "version", "body", "why"),
    [
        (3, 12, b"\xff\xff\xff\xff\x0f", "claims 4294967294 elements"),
        (3, 4, b"\x7f\xff\xff\xff\x00", "claims 2147483647 elements"),
        (20, 4, b"\xff\xff\xff\xff\x0f", "claims 4294967294 elements"),
        (2, 7, b"\xff\xff\xff\xff\x00\x00\x00", "non-nullable field ListOffsetsRequest.topics"),
        (2, 5, b"\xff\xff\xff\xff\x00\xff\xff\xff\xff", "serialized as null"),
        (3, 4, b"\x00\x00\x00\x01\x7f\xff\x00", "claims 32767 bytes"),
        (3, 4, b"\x00\x00\x00\x01\xff\xfe", "negative length -2"),
        (3, 12, b"\x01\x00\x00\x80\x80\x80\x80\x80\x01", "varint longer than 5 bytes"),
        (3, 12, b"\x01\x00\x00\x05\x00\xff\xff\xff\x0f", "tagged fields claims"),
    ],
)
def test_known_bombs_are_refused_with_a_reason(api_key, version, body, why):
    with pytest.raises(MalformedRequest, match=why):
        check_request(api_key, version, body, 0)


def test_produce_records_are_checked_by_length_only():
    """A records field is skipped by its length: the walk never looks inside the batch."""
    cls = request_class(0, 9)
    from nerve.protocol.messages import build

    junk = b"\xff" * 1000  # not a record batch at all
    body = encode(build(cls, transactional_id=None, acks=1, timeout=1000, topic_data=[
        {"name": "t", "partition_data": [{"index": 0, "records": junk}]}]))
    assert check_request(0, 9, body, 0) == len(body)
    long_claim = body.replace(b"\xe9\x07", b"\xf3\x07")  # compact length 1000 -> 1010
    with pytest.raises(MalformedRequest, match="records claims 1010 bytes"):
        check_request(0, 9, long_claim, 0)


def test_the_plan_is_compiled_once_per_version():
    assert scanner(1, 12) is scanner(1, 12)
    assert scanner(1, 12) is not scanner(1, 11)


def test_nullable_struct_marker_and_known_tags():
    # Fetch v12's cluster_id is a known tagged field (tag 0): a bomb inside its size is refused.
    cls = request_class(1, 12)
    from nerve.protocol.messages import build

    body = encode(build(cls, max_wait=100, min_bytes=1, max_bytes=1000, topics=[],
                        forgotten_topics_data=[], rack_id="", cluster_id="c"))
    assert check_request(1, 12, body, 0) == len(body)
    tag_at = body.rindex(b"\x01\x00\x02\x02c")  # 1 tag, tag 0, size 2, compact "c"
    bad = body[:tag_at] + b"\x01\x00\x05\xff\xff\xff\xff\x0f"
    with pytest.raises(MalformedRequest):
        check_request(1, 12, bad, 0)
    assert struct.pack(">b", -1) == b"\xff"

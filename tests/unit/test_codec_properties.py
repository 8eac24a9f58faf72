"""Property tests of the request/response codec for every API version the broker serves."""

from __future__ import annotations

import datetime
import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.serial import entity_writer
from kio.static.primitive import Records, i64Timedelta

from nerve.handlers import load_handlers
from nerve.protocol.framing import parse_request_header
from nerve.protocol.messages import decode_request, is_flexible, request_class

# Produce carries opaque record bytes; kio registers no strategy for them.
st.register_type_strategy(Records, st.binary(max_size=64).map(Records))
# kio's own strategy draws int64 millisecond durations that its reader cannot turn back into a
# Python timedelta (about +-2**53 ms is the limit); real clients send -1 or small values.
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


def encode(obj: object) -> bytes:
    out = io.BytesIO()
    entity_writer(type(obj))(out, obj)
    return out.getvalue()


@pytest.mark.parametrize(("api_key", "version"), VERSIONS, ids=lambda x: str(x))
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_request_round_trip_through_frame(api_key: int, version: int, data: st.DataObject):
    cls = request_class(api_key, version)
    request = data.draw(st.from_type(cls))
    flexible = is_flexible(api_key, version)
    header = struct.pack(">hhih", api_key, version, 99, 3) + b"cli" + (b"\x00" if flexible else b"")
    frame = header + encode(request)
    parsed = parse_request_header(frame, flexible=flexible)
    assert (parsed.api_key, parsed.api_version, parsed.correlation_id) == (api_key, version, 99)
    assert decode_request(api_key, version, frame, parsed.body_offset) == request

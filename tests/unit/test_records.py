"""RecordBatch v2 view: header parsing, CRC checks, offset patching, against bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nerve.protocol import records as rb


def test_build_and_validate_round_trip() -> None:
    batch = rb.build_batch([(b"k", b"v"), (None, b"x")], timestamp_ms=1234)
    header = rb.validate_batch(batch)
    assert header.magic == 2
    assert header.records_count == 2
    assert header.last_offset_delta == 1
    assert header.size == len(batch)
    assert header.max_timestamp == 1234
    recs = list(rb.iter_records(batch))
    assert [(r.offset, r.key, r.value) for r in recs] == [(0, b"k", b"v"), (1, None, b"x")]


def test_set_base_offset_keeps_crc_valid() -> None:
    buf = bytearray(rb.build_batch([(None, b"a")] * 3))
    rb.set_base_offset(buf, 0, 1_000_000)
    header = rb.validate_batch(buf)
    assert header.base_offset == 1_000_000
    assert header.last_offset == 1_000_002
    assert [r.offset for r in rb.iter_records(buf)] == [1_000_000, 1_000_001, 1_000_002]


def test_log_append_time_recomputes_crc() -> None:
    buf = bytearray(rb.build_batch([(None, b"a")], timestamp_ms=5))
    rb.set_log_append_time(buf, 0, 99_999)
    header = rb.validate_batch(buf)
    assert header.is_log_append_time
    assert header.max_timestamp == 99_999


def test_crc_mismatch_is_corrupt() -> None:
    buf = bytearray(rb.build_batch([(b"k", b"value")]))
    buf[-1] ^= 0xFF
    with pytest.raises(rb.CorruptRecordError, match="CRC"):
        rb.validate_batch(buf)


def test_torn_batch_is_corrupt() -> None:
    batch = rb.build_batch([(b"k", b"value")])
    with pytest.raises(rb.CorruptRecordError):
        rb.validate_batch(batch[:-1])
    with pytest.raises(rb.CorruptRecordError):
        rb.validate_batch(batch[:30])


def test_old_magic_is_refused() -> None:
    buf = bytearray(rb.build_batch([(b"k", b"value")]))
    buf[rb.MAGIC_OFFSET] = 1
    with pytest.raises(rb.UnsupportedMagicError):
        rb.validate_batch(buf)


def test_valid_prefix_stops_at_first_bad_batch() -> None:
    a = rb.build_batch([(None, b"a")])
    b = rb.build_batch([(None, b"bb")])
    c = bytearray(rb.build_batch([(None, b"ccc")]))
    c[-1] ^= 1
    length, headers = rb.valid_prefix(a + b + bytes(c))
    assert length == len(a) + len(b)
    assert len(headers) == 2


def test_header_field_positions_match_the_spec() -> None:
    batch = rb.build_batch(
        [(None, b"x")], producer_id=77, producer_epoch=3, base_sequence=9, timestamp_ms=42
    )
    assert struct.unpack_from(">q", batch, 43)[0] == 77
    assert struct.unpack_from(">h", batch, 51)[0] == 3
    assert struct.unpack_from(">i", batch, 53)[0] == 9
    h = rb.read_header(batch)
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.last_sequence) == (77, 3, 9, 9)


records_strategy = st.lists(
    st.tuples(st.none() | st.binary(max_size=40), st.none() | st.binary(max_size=200)),
    min_size=1,
    max_size=20,
)


@given(records_strategy, st.integers(0, 2**62), st.integers(0, 2**40))
def test_property_round_trip(
    recs: list[tuple[bytes | None, bytes | None]], offset: int, ts: int
) -> None:
    buf = bytearray(rb.build_batch(recs, timestamp_ms=ts))
    rb.set_base_offset(buf, 0, offset)
    header = rb.validate_batch(buf)
    assert header.base_offset == offset
    assert header.records_count == len(recs)
    decoded = list(rb.iter_records(buf))
    assert [(r.key, r.value) for r in decoded] == recs
    assert [r.offset for r in decoded] == list(range(offset, offset + len(recs)))


@given(st.binary(max_size=200))
def test_property_garbage_never_crashes(data: bytes) -> None:
    length, headers = rb.valid_prefix(data)
    assert 0 <= length <= len(data)
    assert sum(h.size for h in headers) == length


def test_keyless_records_and_record_times() -> None:
    recs = [(b"k", b"v"), (None, b"x"), (b"k" * 300, b"y" * 9000), (None, None)]
    batch = rb.build_batch(recs, timestamps=[50, 90, 70, 90])
    h = rb.read_header(batch)
    plain = rb.records_section(batch, h)
    assert rb.keyless_records(plain, h.records_count) == [1, 3]  # a 3-byte length too
    assert list(rb.record_times(plain, h)) == [(0, 50), (1, 90), (2, 70), (3, 90)]
    assert h.max_timestamp == 90
    with pytest.raises(rb.InvalidRecordError):
        rb.keyless_records(plain[:-3], h.records_count)  # torn last record
    with pytest.raises(rb.InvalidRecordError):
        rb.keyless_records(plain + b"\x00", h.records_count)  # bytes after the last record


def test_record_walks_are_bounded_by_their_bytes() -> None:
    """A hostile header (two billion records) over zero-length records must not spin."""
    zero_length_records = b"\x00" * 70
    header = rb.read_header(rb.build_batch([(b"k", b"v")]))._replace(records_count=2**31 - 1)
    for walk in (lambda: rb.keyless_records(zero_length_records, header.records_count),
                 lambda: list(rb.record_times(zero_length_records, header)),
                 lambda: rb.keyless_records(zero_length_records, 10),
                 lambda: list(rb.record_times(zero_length_records,
                                              header._replace(records_count=10)))):
        with pytest.raises(rb.InvalidRecordError):
            walk()


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_records_section_decompresses(codec: int) -> None:
    import gzip

    import cramjam

    plain_batch = rb.build_batch([(None, b"a" * 100), (b"k", b"b")])
    h = rb.read_header(plain_batch)
    body = plain_batch[rb.BATCH_HEADER_SIZE:]
    packed = {1: lambda d: gzip.compress(d), 2: lambda d: bytes(cramjam.snappy.compress_raw(d)),
              3: lambda d: bytes(cramjam.lz4.compress(d)),
              4: lambda d: bytes(cramjam.zstd.compress(d))}[codec](body)
    header = h._replace(attributes=codec, batch_length=h.batch_length - len(body) + len(packed))
    batch = plain_batch[:rb.BATCH_HEADER_SIZE] + packed
    assert rb.records_section(batch, header) == body
    assert rb.keyless_records(rb.records_section(batch, header), 2) == [0]
    with pytest.raises(rb.CorruptRecordError):
        rb.records_section(plain_batch[:rb.BATCH_HEADER_SIZE] + b"\x01garbage" * 3,
                           header._replace(batch_length=49 + 24))

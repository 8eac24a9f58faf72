"""RecordBatch v2 view: the on-disk and on-wire format of Kafka records.

nerve stores batches exactly as producers send them. This module reads the fixed 61-byte batch
header, checks the CRC-32C, and patches the few fields the broker owns (base offset, partition
leader epoch, and max timestamp for LogAppendTime topics). It never decodes records on the hot
path; `iter_records`, `keyless_records` and `record_times` exist for the rare callers that need
record-level data (`records_section` decompresses first).

Layout (big-endian), offsets from the start of the batch:
  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 |
  17 crc u32 | 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 |
  35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 |
  57 recordsCount i32 | 61 records...
The CRC covers attributes to the end, so rewriting the base offset needs no CRC work.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

import crc32c

from nerve.protocol.compression import CompressionError, decompress

BATCH_HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: bytes not counted by batchLength
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
MAX_TIMESTAMP_OFFSET = 35

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1

COMPRESSION_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

_HEADER = struct.Struct(">qiibIhiqqqhii")
_I64 = struct.Struct(">q")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")


class RecordBatchError(ValueError):
    """Base for batches the broker must refuse."""


class CorruptRecordError(RecordBatchError):
    """CRC mismatch or a torn batch: Kafka's CORRUPT_MESSAGE (2)."""


class InvalidRecordError(RecordBatchError):
    """Structurally wrong batch: Kafka's INVALID_RECORD (87)."""


class UnsupportedMagicError(RecordBatchError):
    """Message format other than v2: Kafka 4 answers UNSUPPORTED_VERSION (35)."""


class BatchHeader(NamedTuple):
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Total bytes of this batch, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_MASK)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)

    @property
    def last_sequence(self) -> int:
        if self.base_sequence == NO_SEQUENCE:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) & 0x7FFFFFFF


def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the fixed header at `pos`; no validation beyond having 61 bytes."""
    if len(buf) - pos < BATCH_HEADER_SIZE:
        raise CorruptRecordError("truncated batch header")
    return BatchHeader._make(_HEADER.unpack_from(buf, pos))


def compute_crc(buf: bytes | bytearray | memoryview, pos: int, size: int) -> int:
    return crc32c.crc32c(memoryview(buf)[pos + ATTRIBUTES_OFFSET : pos + size])


def validate_batch(
    buf: bytes | bytearray | memoryview, pos: int = 0, *, check_crc: bool = True
) -> BatchHeader:
    """Header of a complete, well-formed v2 batch at `pos`, or raise RecordBatchError."""
    remaining = len(buf) - pos
    if remaining >= MAGIC_OFFSET + 1 and buf[pos + MAGIC_OFFSET] != 2:
        raise UnsupportedMagicError(f"magic {buf[pos + MAGIC_OFFSET]} is not supported")
    header = read_header(buf, pos)
    if header.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD:
        raise CorruptRecordError(f"batch length {header.batch_length} is below the header size")
    if header.size > remaining:
        raise CorruptRecordError(f"batch of {header.size} bytes torn at {remaining}")
    if header.last_offset_delta < 0 or header.records_count < 0:
        raise InvalidRecordError("negative lastOffsetDelta or record count")
    if check_crc and compute_crc(buf, pos, header.size) != header.crc:
        raise CorruptRecordError("CRC-32C mismatch")
    return header


def iter_batches(
    buf: bytes | bytearray | memoryview, *, check_crc: bool = True
) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) for every batch; raise at the first bad one."""
    pos = 0
    end = len(buf)
    while pos < end:
        header = validate_batch(buf, pos, check_crc=check_crc)
        yield pos, header
        pos += header.size


def valid_prefix(buf: bytes | bytearray | memoryview) -> tuple[int, list[BatchHeader]]:
    """Length of the longest run of valid batches from the start, and their headers.

    Used by recovery: everything after the returned length is torn or corrupt.
    """
    pos = 0
    headers: list[BatchHeader] = []
    end = len(buf)
    while pos < end:
        try:
            header = validate_batch(buf, pos)
        except RecordBatchError:
            break
        headers.append(header)
        pos += header.size
    return pos, headers


def set_base_offset(buf: bytearray | memoryview, pos: int, base_offset: int) -> None:
    _I64.pack_into(buf, pos, base_offset)


def set_partition_leader_epoch(buf: bytearray | memoryview, pos: int, epoch: int) -> None:
    _I32.pack_into(buf, pos + 12, epoch)


def set_log_append_time(buf: bytearray | memoryview, pos: int, timestamp_ms: int) -> None:
    """Stamp a batch with the broker's time, as Kafka does for LogAppendTime topics.

    Sets the timestamp-type bit and maxTimestamp, then recomputes the CRC, which covers both.
    """
    header = read_header(buf, pos)
    struct.pack_into(">h", buf, pos + ATTRIBUTES_OFFSET, header.attributes | TIMESTAMP_TYPE_MASK)
    _I64.pack_into(buf, pos + MAX_TIMESTAMP_OFFSET, timestamp_ms)
    _U32.pack_into(buf, pos + CRC_OFFSET, compute_crc(buf, pos, header.size))


# ---- record-level access (never on the produce/fetch path of ordinary topics) ----


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    shift = 0
    raw = 0
    while True:
        b = buf[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise InvalidRecordError("varint too long")
    return (raw >> 1) ^ -(raw & 1), pos


class Record(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


def iter_records(batch: bytes | memoryview) -> Iterator[Record]:
    """Decode the records of one uncompressed batch (control batches included)."""
    header = read_header(batch)
    if header.compression:
        raise InvalidRecordError("iter_records reads uncompressed batches only")
    pos = BATCH_HEADER_SIZE
    for _ in range(header.records_count):
        length, pos = _read_varint(batch, pos)
        end = pos + length
        pos += 1  # attributes
        ts_delta, pos = _read_varint(batch, pos)
        off_delta, pos = _read_varint(batch, pos)
        key_len, pos = _read_varint(batch, pos)
        key = None if key_len < 0 else bytes(batch[pos : pos + key_len])
        pos += max(key_len, 0)
        val_len, pos = _read_varint(batch, pos)
        value = None if val_len < 0 else bytes(batch[pos : pos + val_len])
        pos += max(val_len, 0)
        n_headers, pos = _read_varint(batch, pos)
        headers = []
        for _ in range(n_headers):
            hk_len, pos = _read_varint(batch, pos)
            hk = bytes(batch[pos : pos + hk_len]).decode()
            pos += hk_len
            hv_len, pos = _read_varint(batch, pos)
            hv = None if hv_len < 0 else bytes(batch[pos : pos + hv_len])
            pos += max(hv_len, 0)
            headers.append((hk, hv))
        if pos != end:
            raise InvalidRecordError("record length does not match its fields")
        yield Record(
            header.base_offset + off_delta,
            header.base_timestamp + ts_delta,
            key,
            value,
            tuple(headers),
        )


def records_section(batch: bytes | bytearray | memoryview, header: BatchHeader) -> bytes:
    """The records of one batch as plain bytes (decompressed when the batch is compressed)."""
    body = memoryview(batch)[BATCH_HEADER_SIZE : header.size]
    if not header.compression:
        return bytes(body)
    try:
        return decompress(header.compression, body)
    except CompressionError as e:
        raise CorruptRecordError(str(e)) from None


# attributes, timestampDelta, offsetDelta, keyLength, valueLength, header count: a byte each
MIN_RECORD_SIZE = 6


def _check_count(records: bytes, count: int) -> None:
    """A record count the section cannot hold (a corrupt or hostile header) is refused before
    any walk, so a walk is bounded by the bytes it was given."""
    if count < 0 or count * (MIN_RECORD_SIZE + 1) > len(records):
        raise InvalidRecordError(f"{count} records cannot fit in {len(records)} bytes")


def keyless_records(records: bytes, count: int) -> list[int]:
    """Batch indexes (0-based positions) of the records whose key is null: Kafka refuses
    them on compacted topics. A walk over record lengths that reads only the two varints
    before each key length; `records` is a batch's plain records section."""
    found: list[int] = []
    pos = 0
    _check_count(records, count)
    try:
        for i in range(count):
            b = records[pos]
            if b < 0x80:  # one- and two-byte lengths (records under 8 KiB) inline
                length = (b >> 1) ^ -(b & 1)
                pos += 1
            elif (b2 := records[pos + 1]) < 0x80:
                raw = (b & 0x7F) | (b2 << 7)
                length = (raw >> 1) ^ -(raw & 1)
                pos += 2
            else:
                length, pos = _read_varint(records, pos)
            p = pos + 1  # attributes
            while records[p] & 0x80:  # timestampDelta
                p += 1
            p += 1
            while records[p] & 0x80:  # offsetDelta
                p += 1
            k = records[p + 1]
            if k < 0x80:
                if k & 1:  # a negative zigzag length: null key
                    found.append(i)
            elif _read_varint(records, p + 1)[0] < 0:
                found.append(i)
            if length < MIN_RECORD_SIZE:  # else a zero length would never advance
                raise InvalidRecordError(f"record length {length} is below the minimum")
            pos += length
    except IndexError:
        raise InvalidRecordError("record extends past the batch") from None
    if pos != len(records):
        raise InvalidRecordError(
            f"batch holds {len(records) - pos} bytes after its {count} records")
    return found


def record_times(records: bytes, header: BatchHeader) -> Iterator[tuple[int, int]]:
    """(offset, timestamp) of each record of a batch's plain records section. A
    LogAppendTime batch's records all carry its max timestamp, as Kafka reads them."""
    pos = 0
    _check_count(records, header.records_count)
    base_offset, base_ts = header.base_offset, header.base_timestamp
    append_time = header.max_timestamp if header.is_log_append_time else None
    try:
        for _ in range(header.records_count):
            length, pos = _read_varint(records, pos)
            if length < MIN_RECORD_SIZE:
                raise InvalidRecordError(f"record length {length} is below the minimum")
            end = pos + length
            ts_delta, p = _read_varint(records, pos + 1)
            off_delta, _ = _read_varint(records, p)
            yield (base_offset + off_delta,
                   append_time if append_time is not None else base_ts + ts_delta)
            pos = end
    except IndexError:
        raise InvalidRecordError("record extends past the batch") from None


def _write_varint(out: bytearray, value: int) -> None:
    raw = (value << 1) ^ (value >> 63)
    while raw & ~0x7F:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)


def build_batch(
    records: list[tuple[bytes | None, bytes | None]] | list[Record],
    *,
    base_offset: int = 0,
    timestamp_ms: int = 0,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = -1,
    base_sequence: int = NO_SEQUENCE,
    attributes: int = 0,
    partition_leader_epoch: int = 0,
    timestamps: list[int] | None = None,
) -> bytes:
    """Encode an uncompressed v2 batch. Used for control batches and by tests.

    timestamps: one per record (the first is the batch's base timestamp); else every record
    has `timestamp_ms`."""
    if timestamps is not None:
        assert len(timestamps) == len(records)
        timestamp_ms = timestamps[0] if timestamps else timestamp_ms
    body = bytearray()
    for i, rec in enumerate(records):
        if isinstance(rec, Record):
            key, value, headers = rec.key, rec.value, rec.headers
        else:
            key, value, headers = rec[0], rec[1], ()
        r = bytearray([0])
        _write_varint(r, timestamps[i] - timestamp_ms if timestamps else 0)  # timestamp delta
        _write_varint(r, i)  # offset delta
        for part in (key, value):
            if part is None:
                _write_varint(r, -1)
            else:
                _write_varint(r, len(part))
                r += part
        _write_varint(r, len(headers))
        for hk, hv in headers:
            hkb = hk.encode()
            _write_varint(r, len(hkb))
            r += hkb
            if hv is None:
                _write_varint(r, -1)
            else:
                _write_varint(r, len(hv))
                r += hv
        _write_varint(body, len(r))
        body += r
    count = len(records)
    total = BATCH_HEADER_SIZE + len(body)
    out = bytearray(total)
    _HEADER.pack_into(
        out,
        0,
        base_offset,
        total - LOG_OVERHEAD,
        partition_leader_epoch,
        2,
        0,
        attributes,
        max(count - 1, 0),
        timestamp_ms,
        max(timestamps) if timestamps else timestamp_ms,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    )
    out[BATCH_HEADER_SIZE:] = body
    _U32.pack_into(out, CRC_OFFSET, compute_crc(out, 0, total))
    return bytes(out)

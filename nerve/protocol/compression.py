"""Record batch codecs: decompressing the records section of a v2 batch.

Only for the few record-level readers (the keyless-record check of compacted topics,
ListOffsets by timestamp, `nerve log dump`); produce and fetch move compressed batches as
they are. gzip comes from the standard library, snappy, lz4 and zstd from cramjam.
"""

from __future__ import annotations

import gzip

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4

# The Java client frames snappy as xerial's stream: this magic, two version ints, then
# [length][raw snappy block] pairs. librdkafka sends the same framing.
XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16


class CompressionError(ValueError):
    """The records section does not decompress with the batch's codec."""


def decompress(codec: int, data: bytes | bytearray | memoryview) -> bytes:
    """The uncompressed records section of a batch compressed with `codec`."""
    try:
        if codec == NONE:
            return bytes(data)
        if codec == GZIP:
            return gzip.decompress(bytes(data))
        import cramjam  # imported on first use: most brokers never decompress anything

        if codec == SNAPPY:
            raw = bytes(data)
            if raw.startswith(XERIAL_MAGIC):
                out = bytearray()
                pos = _XERIAL_HEADER
                while pos + 4 <= len(raw):
                    n = int.from_bytes(raw[pos:pos + 4], "big")
                    out += bytes(cramjam.snappy.decompress_raw(raw[pos + 4:pos + 4 + n]))
                    pos += 4 + n
                return bytes(out)
            return bytes(cramjam.snappy.decompress_raw(raw))
        if codec == LZ4:
            return bytes(cramjam.lz4.decompress(bytes(data)))
        if codec == ZSTD:
            return bytes(cramjam.zstd.decompress(bytes(data)))
    except CompressionError:
        raise
    except Exception as e:  # gzip/zlib errors, cramjam.DecompressionError: bad input either way
        raise CompressionError(f"records do not decompress: {e}") from None
    raise CompressionError(f"unknown compression codec {codec}")

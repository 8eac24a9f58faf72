"""Walking a segment file that may be damaged: batch headers, damaged places, resync.

Used by LogSegment (fetch, index rebuilds, recovery of the trusted part of a log) and by
`nerve log dump|verify`. A damaged place is a run of bytes where no well-formed batch starts;
the walk resumes at the next CRC-valid batch whose base offset fits (found by searching for a
plausible header after the damage, bounded by the next offset index entry when one is known),
so later data stays readable instead of being cut off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nerve.protocol.records import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_OFFSET,
    BatchHeader,
    compute_crc,
    read_header,
)
from nerve.storage.files import read_all

MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD
_SEARCH_CHUNK = 1 << 20
_MAGIC = b"\x02"


@dataclass(frozen=True)
class Damage:
    """Bytes [position, end) of a segment hold no readable batch.

    Offsets [first_offset, next_offset) are lost with them: first_offset is where the walk
    expected the next batch, next_offset the base offset of the good batch at `end` (-1 when
    nothing good follows in this file).
    """

    position: int
    end: int
    first_offset: int
    next_offset: int
    reason: str

    def describe(self) -> str:
        lost = (f"offsets {self.first_offset}..{self.next_offset - 1}"
                if self.next_offset > self.first_offset else f"from offset {self.first_offset}")
        return (f"position {self.position}: {self.reason} ({self.end - self.position} bytes, "
                f"{lost} unreadable)")


def header_problem(h: BatchHeader, position: int, end: int, expected: int | None) -> str | None:
    """Why the header `h` at `position` cannot start a batch of a file of `end` bytes."""
    if h.magic != 2:
        return f"magic {h.magic} is not 2"
    if h.batch_length < MIN_BATCH_LENGTH:
        return f"batch length {h.batch_length} is below the header size"
    if position + h.size > end:
        return f"batch of {h.size} bytes runs past the end of the file ({end} bytes)"
    if h.last_offset_delta < 0 or h.records_count < 0:
        return "negative lastOffsetDelta or record count"
    if expected is not None and h.base_offset < expected:  # gaps: log compaction
        return f"base offset {h.base_offset} where {expected} or more was expected"
    return None


def crc_ok(fd: int, position: int, h: BatchHeader) -> bool:
    data = read_all(fd, position, h.size)
    return len(data) == h.size and compute_crc(data, 0, h.size) == h.crc


# (position, offset) of the first index entry after a position, when an index is known.
NextBoundary = Callable[[int], tuple[int, int] | None]


def resync(
    fd: int, position: int, size: int, expected: int, next_boundary: NextBoundary | None = None
) -> tuple[int, BatchHeader | None]:
    """The first position after `position` where a CRC-valid batch with base offset >=
    `expected` starts (and its header), else (size, None).

    The next offset index entry, when there is one, bounds the search: a batch starts there
    (checked like any candidate) and the damaged batch's offsets end before its offset.
    """
    bound = next_boundary(position) if next_boundary is not None else None
    limit, limit_offset = bound if bound is not None else (size, None)
    for q, h in _candidates(fd, position + 1, min(limit, size), size, expected, limit_offset):
        if crc_ok(fd, q, h):
            return q, h
    if bound is not None and limit < size:
        buf = os.pread(fd, BATCH_HEADER_SIZE, limit)
        if len(buf) == BATCH_HEADER_SIZE:
            h = read_header(buf)
            if header_problem(h, limit, size, limit_offset) is None and crc_ok(fd, limit, h):
                return limit, h
        return resync(fd, limit, size, expected)  # the index is wrong too: search on
    return size, None


def _candidates(
    fd: int, start: int, stop: int, size: int, expected: int, max_offset: int | None
) -> Iterator[tuple[int, BatchHeader]]:
    """Positions in [start, stop) whose bytes parse as a plausible header (magic byte first:
    one bytes.find per candidate, no per-byte Python)."""
    pos = start
    while pos < stop:
        buf = read_all(fd, pos, min(_SEARCH_CHUNK, stop - pos) + BATCH_HEADER_SIZE)
        n = min(_SEARCH_CHUNK, stop - pos)
        i = buf.find(_MAGIC, MAGIC_OFFSET)
        while i >= 0 and i - MAGIC_OFFSET < n:
            q = i - MAGIC_OFFSET
            if q + BATCH_HEADER_SIZE <= len(buf):
                h = read_header(buf, q)
                if (h.base_offset >= expected
                        and (max_offset is None or h.base_offset < max_offset)
                        and header_problem(h, pos + q, size, None) is None):
                    yield pos + q, h
            i = buf.find(_MAGIC, i + 1)
        pos += n


def walk(
    fd: int,
    position: int,
    expected: int,
    end: int,
    *,
    window: int,
    known: dict[int, Damage] | None = None,
    on_damage: Callable[[Damage], None] | None = None,
    next_boundary: NextBoundary | None = None,
    next_offset: int = -1,
    pin: object = None,
) -> Iterator[tuple[int, BatchHeader] | Damage]:
    """(position, header) of each well-formed batch from `position` (a batch boundary holding
    offset `expected`) to `end`, and a Damage wherever the structure breaks.

    Headers only, no CRC. `known` caches damaged places by position (new ones are added and
    passed to on_damage); next_offset is the file's next offset when known (the offset after
    damage that runs to the end). `pin` (the fd's FileHandle) is held while the walk lasts.
    """
    buf = b""
    buf_start = position
    while position < end:
        damage = known.get(position) if known else None
        if damage is None:
            off = position - buf_start
            if off + BATCH_HEADER_SIZE > len(buf):
                buf = os.pread(fd, max(min(window, end - position), BATCH_HEADER_SIZE), position)
                buf_start, off = position, 0
            problem = "file ends inside a batch header"
            if off + BATCH_HEADER_SIZE <= len(buf):
                h = read_header(buf, off)
                # header_problem() inlined for the common case (this runs on every fetch).
                size = h.batch_length + LOG_OVERHEAD
                if (h.magic == 2 and h.batch_length >= MIN_BATCH_LENGTH
                        and position + size <= end and h.last_offset_delta >= 0
                        and h.records_count >= 0 and h.base_offset >= expected
                        and (next_offset < 0 or h.base_offset < next_offset)):
                    yield position, h
                    position += size
                    expected = h.base_offset + h.last_offset_delta + 1
                    continue
                problem = header_problem(h, position, end, expected)
                assert problem is not None
            q, good = resync(fd, position, end, expected, next_boundary)
            damage = Damage(position, q, expected,
                            good.base_offset if good is not None else next_offset, problem)
            if known is not None:
                known[position] = damage
            if on_damage is not None:
                on_damage(damage)
        yield damage
        if damage.next_offset < 0:
            return
        position, expected = damage.end, damage.next_offset

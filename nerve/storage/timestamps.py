"""Record-level timestamp lookups for ListOffsets (Kafka's LogSegment.findOffsetByTimestamp
and the MAX_TIMESTAMP branch of UnifiedLog.fetchOffsetByTimestamp).

The indexes and batch headers narrow the search to one batch; only that batch's records are
read (decompressed when needed) to find the record itself, as Kafka does. ListOffsets is not on
the produce/fetch path, so reading one batch per lookup is fine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from nerve.protocol import records as rb
from nerve.storage.files import read_all

if TYPE_CHECKING:
    from nerve.storage.segment import LogSegment

# (offset, timestamp) of a record, as ListOffsets answers it
Found = tuple[int, int]


def _record_times(seg: LogSegment, pos: int, header: rb.BatchHeader) -> Iterator[Found] | None:
    """The batch's (offset, timestamp) pairs, or None if its records cannot be read (damage:
    the caller then answers at batch level)."""
    h = seg.handle()
    data = read_all(h.fd, pos, header.size)
    try:
        return iter(list(rb.record_times(rb.records_section(data, header), header)))
    except rb.RecordBatchError:
        return None


def segment_offset_for_timestamp(
    seg: LogSegment, target: int, start_offset: int
) -> Found | None:
    """The first record at or after `start_offset` whose timestamp is >= target."""
    if seg.max_timestamp < target:  # loads the indexes of a sealed segment
        return None
    begin = max(seg.time_index.lookup_before(target), start_offset)
    position = 0
    if begin > seg.base_offset:
        found = seg.find_batch(begin)
        if found is None:
            return None
        position = found[0]
    for pos, header in seg.iter_headers(position):
        if header.max_timestamp < target or header.last_offset < start_offset:
            continue
        times = _record_times(seg, pos, header)
        if times is None:
            return max(header.base_offset, start_offset), header.max_timestamp
        for offset, ts in times:
            if ts >= target and offset >= start_offset:
                return offset, ts
    return None


def offset_for_timestamp(segments: Iterable[LogSegment], target: int,
                         log_start_offset: int) -> Found | None:
    for seg in segments:
        if seg.next_offset <= log_start_offset:
            continue
        found = segment_offset_for_timestamp(seg, target, log_start_offset)
        if found is not None:
            return found
    return None


def max_timestamp(segments: Iterable[LogSegment], log_start_offset: int) -> Found:
    """MAX_TIMESTAMP: the first record carrying the log's largest timestamp, found in the
    first batch whose max timestamp it is; (-1, -1) when the log has no timestamps."""
    best: LogSegment | None = None
    for seg in segments:
        if seg.next_offset > log_start_offset and (
                best is None or seg.max_timestamp > best.max_timestamp):
            best = seg
    if best is None or best.max_timestamp < 0:
        return -1, -1
    target = best.max_timestamp
    found = best.find_batch(best.offset_of_max_timestamp)
    for pos, header in best.iter_headers(found[0] if found else 0):
        if header.max_timestamp != target:
            continue
        times = _record_times(best, pos, header)
        for offset, ts in times or ():
            if ts == target:
                return offset, ts
        return header.last_offset, target  # a header whose records disagree with it
    return -1, -1

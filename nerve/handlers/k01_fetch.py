"""Fetch (key 1), versions 4-16.

Behaviour:
- Returns whole batches from the segment files, without decoding them: a fetch offset in the
  middle of a batch returns that whole batch (clients skip the records before their offset).
- `partition_max_bytes` and the request's `max_bytes` are honoured, except that the first
  non-empty partition always gets at least one whole batch (KIP-74), so a batch larger than
  the limits can still be consumed.
- Long poll: when fewer than `min_bytes` are ready, waits up to `max_wait_ms` for an append to
  any of the requested partitions.
- A fetch that reaches a damaged place of the log (bit rot: see docs/operations.md) gets
  CORRUPT_MESSAGE for that partition, as Kafka's does; a client can seek past it. A read
  that fails in the OS (EIO from a bad sector, ...) answers KAFKA_STORAGE_ERROR for that
  partition (one log line per partition per READ_ERROR_LOG_INTERVAL_S). The other
  partitions of the request are answered normally either way.
- Offsets before the log start or after the log end: OFFSET_OUT_OF_RANGE. Unknown topic or
  partition: UNKNOWN_TOPIC_OR_PARTITION (UNKNOWN_TOPIC_ID from v13, where topics are named by
  id).
- Fetch sessions (KIP-227) are not kept: every response has session_id 0, which clients treat
  as "send full fetch requests", as Kafka does when its session cache is full.
- Transactions: every answer carries the partition's last stable offset (the first offset of
  its oldest open transaction, else the high watermark). read_committed (isolation_level 1)
  never reads past it and lists the aborted transactions overlapping what it returns
  (producer id, first offset), from the partition's .txnindex; read_uncommitted gets null.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from nerve.handlers import RawResponse, RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.fastcodec import FetchPartitionData, encode_fetch_response
from nerve.protocol.messages import ZERO_UUID, ms
from nerve.storage.errors import CorruptLogError, OffsetOutOfRangeError

READ_COMMITTED = 1
READ_ERROR_LOG_INTERVAL_S = 10.0

log = logging.getLogger("nerve.storage")
_read_error_logged: dict[tuple[str, int], float] = {}  # partition -> when last logged


def _log_read_error(topic: str, partition: int, e: OSError) -> None:
    now = time.monotonic()
    key = (topic, partition)
    if now - _read_error_logged.get(key, -READ_ERROR_LOG_INTERVAL_S) >= READ_ERROR_LOG_INTERVAL_S:
        _read_error_logged[key] = now
        log.error("%s-%d: reading the log failed: %s; fetches answer KAFKA_STORAGE_ERROR",
                  topic, partition, e)


def _empty(partition: int, code: ErrorCode) -> FetchPartitionData:
    return FetchPartitionData(partition, code, -1, -1, -1, (), 0, None)


TopicsData = list[tuple[str | uuid.UUID, list[FetchPartitionData]]]


def _read_all(
    ctx: RequestContext, request: Any, by_id: bool
) -> tuple[TopicsData, int, list[tuple[str, int]], bool]:
    logs = ctx.broker.logs
    remaining = request.max_bytes
    total = 0
    keys: list[tuple[str, int]] = []
    errors = False
    committed = getattr(request, "isolation_level", 0) == READ_COMMITTED
    aborted: list[tuple[int, int]] | None = [] if committed else None
    out: TopicsData = []
    for t in request.topics:
        if by_id:
            info = logs.topic_by_id(t.topic_id)
            name = info.name if info is not None else None
            missing = ErrorCode.unknown_topic_id
            # kio reads the all-zero id as None; it is answered UNKNOWN_TOPIC_ID like any other.
            topic_key: str | uuid.UUID = t.topic_id or ZERO_UUID
        else:
            name = t.topic
            missing = ErrorCode.unknown_topic_or_partition
            topic_key = t.topic
        parts: list[FetchPartitionData] = []
        for p in t.partitions:
            plog = logs.get_log(name, p.partition) if name is not None else None
            if plog is None:
                parts.append(_empty(p.partition, missing))
                errors = True
                continue
            hw = plog.high_watermark
            start = plog.log_start_offset
            keys.append((plog.topic, p.partition))
            limit = min(p.partition_max_bytes, remaining)
            lso = plog.last_stable_offset
            try:
                data = plog.read(p.fetch_offset, max(limit, 0), min_one=total == 0,
                                 upper=lso if committed else None)
            except OffsetOutOfRangeError:
                # As Kafka's FetchResponse.partitionResponse(error): watermarks are -1.
                parts.append(_empty(p.partition, ErrorCode.offset_out_of_range))
                errors = True
                continue
            except CorruptLogError:  # logged by storage, once per damaged place
                parts.append(_empty(p.partition, ErrorCode.corrupt_message))
                errors = True
                continue
            except OSError as e:  # the disk, not the client: Kafka's KafkaStorageException
                _log_read_error(plog.topic, p.partition, e)
                parts.append(_empty(p.partition, ErrorCode.kafka_storage_error))
                errors = True
                continue
            if committed:
                aborted = (plog.txn.aborted_between(p.fetch_offset, lso) if data.size else [])
            parts.append(FetchPartitionData(p.partition, ErrorCode.none, hw, lso, start,
                                            data.regions, data.size, aborted))
            total += data.size
            remaining -= data.size
        out.append((topic_key, parts))
    return out, total, keys, errors


@api(1, "Fetch", 4, 16)
async def handle_fetch(ctx: RequestContext, request: Any) -> Any:
    by_id = ctx.version >= 13
    topics, total, keys, errors = _read_all(ctx, request, by_id)
    max_wait_s = ms(request.max_wait) / 1000.0
    if total < request.min_bytes and max_wait_s > 0 and not errors and keys:
        deadline = time.monotonic() + max_wait_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await ctx.broker.waiters.wait_any(keys, left)
            topics, total, keys, errors = _read_all(ctx, request, by_id)
            if total >= request.min_bytes or errors:
                break
    acct = ctx.broker.extensions.get("accounting")
    if acct is not None:  # who reads where, for the console's backbone map
        acct.record_fetch(ctx.header.client_id, ctx.client_host, (t for t, _ in keys), total)
    return RawResponse(encode_fetch_response(ctx.version, topics))

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
- Fetch sessions (KIP-227, v7+; nerve/coordinator/fetch_sessions.py): a full fetch with
  epoch 0 opens a session (up to `max.incremental.fetch.session.cache.slots`, else session 0:
  the client goes on with full fetches); incremental fetches name only changed and forgotten
  partitions and are answered with the partitions that have records, new watermarks or
  errors. Unknown session: FETCH_SESSION_ID_NOT_FOUND; wrong epoch:
  INVALID_FETCH_SESSION_EPOCH; names vs ids mixed: FETCH_SESSION_TOPIC_ID_ERROR (top-level
  errors, session 0, no topics, as Kafka answers them).
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

from nerve.coordinator.fetch_sessions import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    INVALID_SESSION_ID,
    FetchSession,
    FetchSessionCache,
    TopicKey,
    next_epoch,
)
from nerve.handlers import RawResponse, RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.fastcodec import FetchPartitionData, encode_fetch_response
from nerve.protocol.messages import ZERO_UUID, ms
from nerve.security.acl import TOPIC, AclOperation, authorize
from nerve.security.quotas import enforcer
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
# What to read: topic (name, or id from v13) and its partitions, each with .partition,
# .fetch_offset, .partition_max_bytes (a request's partitions or a session's).
Wanted = list[tuple[TopicKey, list[Any]]]


def _read_all(
    ctx: RequestContext, wanted: Wanted, max_bytes: int, committed: bool, by_id: bool,
    incremental: bool = False,
) -> tuple[TopicsData, int, list[tuple[str, int]], bool]:
    """incremental: `wanted` holds a session's CachedPartitions; one that is caught up and
    whose watermarks are what the session last told is not read at all (it has nothing to
    return and the answer leaves it out): an idle consumer's incremental fetch of 1,000
    partitions then costs lookups, not 1,000 reads."""
    logs = ctx.broker.logs
    remaining = max_bytes
    total = 0
    keys: list[tuple[str, int]] = []
    errors = False
    aborted: list[tuple[int, int]] | None = [] if committed else None
    out: TopicsData = []
    for topic_key, partitions in wanted:
        if by_id:
            info = logs.topic_by_id(topic_key)  # type: ignore[arg-type]
            name = info.name if info is not None else None
            missing = ErrorCode.unknown_topic_id
        else:
            name = topic_key  # type: ignore[assignment]
            missing = ErrorCode.unknown_topic_or_partition
        parts: list[FetchPartitionData] = []
        if name is not None and not authorize(ctx, AclOperation.READ, TOPIC, name):
            out.append((topic_key, [_empty(p.partition, ErrorCode.topic_authorization_failed)
                                    for p in partitions]))
            errors = True
            continue
        for p in partitions:
            plog = logs.get_log(name, p.partition) if name is not None else None
            if plog is None:
                parts.append(_empty(p.partition, missing))
                errors = True
                continue
            hw = plog.high_watermark
            start = plog.log_start_offset
            keys.append((plog.topic, p.partition))
            if incremental and p.high_watermark == hw and p.log_start_offset == start and \
                    p.fetch_offset == (plog.last_stable_offset if committed else hw):
                continue
            lso = plog.last_stable_offset
            limit = min(p.partition_max_bytes, remaining)
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
            if data.size:
                ctx.broker.stats.fetched(plog.topic, data.size)
        out.append((topic_key, parts))
    return out, total, keys, errors


def sessions_of(ctx: RequestContext) -> FetchSessionCache:
    """The broker's fetch session cache, made on first use."""
    ext = ctx.broker.extensions
    cache = ext.get("fetch_sessions")
    if cache is None:
        cache = ext["fetch_sessions"] = FetchSessionCache(
            ctx.broker.config.get_int("max.incremental.fetch.session.cache.slots"),
            ctx.now_ms)
    return cache  # type: ignore[no-any-return]


def _requested(request: Any, by_id: bool) -> Wanted:
    # kio reads the all-zero topic id as None; it is answered UNKNOWN_TOPIC_ID like any other.
    return [((t.topic_id or ZERO_UUID) if by_id else t.topic, t.partitions)
            for t in request.topics]


def _update_session(session: FetchSession, request: Any, by_id: bool) -> None:
    session.update(
        ((topic, p.partition, p.fetch_offset, p.partition_max_bytes)
         for topic, parts in _requested(request, by_id) for p in parts),
        (((t.topic_id or ZERO_UUID) if by_id else t.topic, partition)
         for t in request.forgotten_topics_data for partition in t.partitions))


def _incremental(session: FetchSession, topics: TopicsData) -> TopicsData:
    """Keep the partitions an incremental answer must carry (remembering what they report);
    the ones that returned records go last in the session's order."""
    out: TopicsData = []
    for topic, parts in topics:
        keep = []
        for p in parts:
            cached = session.partitions.get((topic, p.partition))
            if cached is None or cached.must_respond(p.error_code, p.high_watermark,
                                                     p.log_start_offset, p.records_size):
                keep.append(p)
                if p.records_size and cached is not None:
                    session.served((topic, p.partition))
        if keep:
            out.append((topic, keep))
    return out


def _session_error(version: int, code: ErrorCode) -> RawResponse:
    return RawResponse(encode_fetch_response(version, [], error_code=code,
                                             session_id=INVALID_SESSION_ID))


@api(1, "Fetch", 4, 16)
async def handle_fetch(ctx: RequestContext, request: Any) -> Any:
    by_id = ctx.version >= 13
    committed = getattr(request, "isolation_level", 0) == READ_COMMITTED
    session: FetchSession | None = None  # an incremental fetch's session
    open_session = False  # a full fetch asking for a new session
    if ctx.version >= 7:
        session_id, epoch = request.session_id, request.session_epoch
        if epoch in (INITIAL_EPOCH, FINAL_EPOCH):
            if session_id != INVALID_SESSION_ID:
                sessions_of(ctx).remove(session_id)  # a full fetch closes the session named
            open_session = epoch == INITIAL_EPOCH
        else:
            cache = sessions_of(ctx)
            session = cache.get(session_id)
            if session is None:
                return _session_error(ctx.version, ErrorCode.fetch_session_id_not_found)
            if session.epoch != epoch:
                return _session_error(ctx.version, ErrorCode.invalid_fetch_session_epoch)
            if session.by_id != by_id:
                return _session_error(ctx.version, ErrorCode.fetch_session_topic_id_error)
            _update_session(session, request, by_id)
            if not session.partitions:  # nothing left to fetch: closed, answered sessionless
                cache.remove(session_id)
                return RawResponse(encode_fetch_response(ctx.version, []))
            cache.touch(session)
            session.epoch = next_epoch(session.epoch)
    wanted = session.by_topic() if session is not None else _requested(request, by_id)
    incremental = session is not None
    topics, total, keys, errors = _read_all(ctx, wanted, request.max_bytes, committed, by_id,
                                            incremental)
    max_wait_s = ms(request.max_wait) / 1000.0
    if total < request.min_bytes and max_wait_s > 0 and not errors and keys:
        deadline = time.monotonic() + max_wait_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await ctx.broker.waiters.wait_any(keys, left)
            topics, total, keys, errors = _read_all(ctx, wanted, request.max_bytes, committed,
                                                    by_id, incremental)
            if total >= request.min_bytes or errors:
                break
    acct = ctx.broker.extensions.get("accounting")
    if acct is not None:  # who reads where, for the console's backbone map
        acct.record_fetch(ctx.header.client_id, ctx.client_host, (t for t, _ in keys), total)
    quotas = enforcer(ctx.broker)
    throttle = quotas.record(ctx.principal, ctx.header.client_id, "consumer_byte_rate", total,
                             time.monotonic()) if quotas.store.quotas else 0
    if throttle:  # Kafka: over consumer_byte_rate, an empty answer and a muted connection
        quotas.unrecord(ctx.principal, ctx.header.client_id, "consumer_byte_rate", total)
        ctx.throttle_ms = throttle
        return RawResponse(encode_fetch_response(
            ctx.version, [], throttle_time_ms=throttle,
            session_id=session.id if session is not None else INVALID_SESSION_ID))
    session_id_out = INVALID_SESSION_ID
    if session is not None:
        topics = _incremental(session, topics)
        session_id_out = session.id
    elif open_session and wanted:
        new = sessions_of(ctx).create(by_id)
        if new is not None:  # remembers what this full answer told the client
            _update_session(new, request, by_id)
            _incremental(new, topics)
            session_id_out = new.id
    return RawResponse(encode_fetch_response(ctx.version, topics, session_id=session_id_out))

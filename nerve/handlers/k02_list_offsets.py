"""ListOffsets (key 2), versions 1-11.

Behaviour: timestamp -2 (EARLIEST) and -4 (EARLIEST_LOCAL, v8+: no tiered storage, so the
same) give the log start offset; -1 (LATEST) the high watermark (the last stable offset under
read_committed); -3 (MAX_TIMESTAMP, v7+) the offset and timestamp of the first record carrying
the largest timestamp; -5 (LATEST_TIERED, v9+) and -6 (EARLIEST_PENDING_UPLOAD, v11+) offset
-1, as Kafka answers without tiered storage; any other timestamp the first record (not batch)
whose timestamp is at or after it, or offset -1 when there is none. Results by timestamp and
MAX_TIMESTAMP at or past the high watermark (the LSO under read_committed) are not given, as in
Kafka. A special timestamp the request's version does not know, or any other negative one:
UNSUPPORTED_VERSION (Kafka's answer). Unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION.
v10's timeout is ignored (answers are immediate).
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import TOPIC, AclOperation, authorize

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
LATEST_TIERED = -5
EARLIEST_PENDING_UPLOAD = -6

# The first version that knows each special timestamp (Kafka's ListOffsetsRequest).
_SINCE = {LATEST: 0, EARLIEST: 0, MAX_TIMESTAMP: 7, EARLIEST_LOCAL: 8, LATEST_TIERED: 9,
          EARLIEST_PENDING_UPLOAD: 11}
NO_EPOCH = -1


def _answer(plog: Any, ts: int, version: int, committed: bool) -> dict[str, Any]:
    """error_code, offset, timestamp and leader_epoch for one partition."""
    if ts < 0 and _SINCE.get(ts, 99) > version:
        return {"error_code": ErrorCode.unsupported_version, "offset": -1, "timestamp": -1,
                "leader_epoch": NO_EPOCH}
    out = {"error_code": ErrorCode.none, "offset": -1, "timestamp": -1, "leader_epoch": 0}
    if ts in (EARLIEST, EARLIEST_LOCAL):
        out["offset"] = plog.log_start_offset
        return out
    if ts == LATEST:
        out["offset"] = plog.last_stable_offset if committed else plog.high_watermark
        return out
    found = None
    if ts == MAX_TIMESTAMP:
        found = plog.max_timestamp()
    elif ts >= 0:
        found = plog.offset_for_timestamp(ts)
    fetchable = plog.last_stable_offset if committed else plog.high_watermark
    if found is None or found[0] < 0 or found[0] >= fetchable:
        out["leader_epoch"] = NO_EPOCH
        return out
    out["offset"], out["timestamp"] = found
    return out


@api(2, "ListOffsets", 1, 11)
async def handle_list_offsets(ctx: RequestContext, request: Any) -> Any:
    logs = ctx.broker.logs
    topics = []
    committed = getattr(request, "isolation_level", 0) == 1  # read_committed: up to the LSO
    for t in request.topics:
        parts = []
        allowed = authorize(ctx, AclOperation.DESCRIBE, TOPIC, t.name)
        for p in t.partitions:
            plog = logs.get_log(t.name, p.partition_index)
            if not allowed:
                entry = {"error_code": ErrorCode.topic_authorization_failed, "offset": -1,
                         "timestamp": -1, "leader_epoch": NO_EPOCH}
            elif plog is None:
                entry = {"error_code": ErrorCode.unknown_topic_or_partition, "offset": -1,
                         "timestamp": -1, "leader_epoch": NO_EPOCH}
            else:
                entry = _answer(plog, p.timestamp, ctx.version, committed)
            entry["partition_index"] = p.partition_index
            parts.append(entry)
        topics.append({"name": t.name, "partitions": parts})
    return build(response_class(2, ctx.version), throttle_time=0, topics=topics)

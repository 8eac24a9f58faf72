"""ListOffsets (key 2), versions 1-8.

Behaviour: timestamp -2 (EARLIEST) and -4 (EARLIEST_LOCAL, v8) give the log start offset; -1
(LATEST) the high watermark (the last stable offset under read_committed, the same value until
transactions exist); -3 (MAX_TIMESTAMP, v7) the offset and timestamp of the record with the
largest timestamp; any other timestamp the first offset whose timestamp is at or after it, or
offset -1 when there is none. Unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class

EARLIEST = -2
LATEST = -1
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4


@api(2, "ListOffsets", 1, 8)
async def handle_list_offsets(ctx: RequestContext, request: Any) -> Any:
    logs = ctx.broker.logs
    topics = []
    committed = getattr(request, "isolation_level", 0) == 1  # read_committed: up to the LSO
    for t in request.topics:
        parts = []
        for p in t.partitions:
            entry: dict[str, Any] = {"partition_index": p.partition_index, "timestamp": -1,
                                     "offset": -1, "leader_epoch": 0}
            plog = logs.get_log(t.name, p.partition_index)
            if plog is None:
                entry["error_code"] = ErrorCode.unknown_topic_or_partition
                entry["leader_epoch"] = -1
            else:
                entry["error_code"] = ErrorCode.none
                ts = p.timestamp
                if ts in (EARLIEST, EARLIEST_LOCAL):
                    entry["offset"] = plog.log_start_offset
                elif ts == LATEST:
                    entry["offset"] = (plog.last_stable_offset if committed
                                       else plog.high_watermark)
                elif ts == MAX_TIMESTAMP:
                    entry["offset"], entry["timestamp"] = plog.max_timestamp()
                elif ts < 0:
                    entry["error_code"] = ErrorCode.invalid_request
                else:
                    found = plog.offset_for_timestamp(ts)
                    if found is not None:
                        entry["offset"], entry["timestamp"] = found
            parts.append(entry)
        topics.append({"name": t.name, "partitions": parts})
    return build(response_class(2, ctx.version), throttle_time=0, topics=topics)

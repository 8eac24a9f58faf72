"""DeleteRecords (key 21), versions 0-2.

Behaviour: moves each partition's log start offset up to the requested offset (-1: the high
watermark) and answers with the new log start offset as low_watermark. Whole segments below it
are removed by storage; fetches below it get OFFSET_OUT_OF_RANGE. An offset below the current
log start changes nothing and reports the current one. An offset above the high watermark, or
negative other than -1, is OFFSET_OUT_OF_RANGE; an unknown topic or partition is
UNKNOWN_TOPIC_OR_PARTITION (low_watermark -1 on errors).
Known gaps: the request timeout is ignored (the change is synchronous on a single node).
"""

from __future__ import annotations

import logging
from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import TOPIC, AclOperation, authorize
from nerve.storage.errors import KafkaStorageError, OffsetOutOfRangeError

log = logging.getLogger("nerve.admin")

HIGH_WATERMARK = -1


def _delete(ctx: RequestContext, topic: str, partition: int, offset: int) -> dict:
    out: dict[str, Any] = {"partition_index": partition, "low_watermark": -1,
                           "error_code": ErrorCode.none}
    plog = ctx.broker.logs.get_log(topic, partition)
    if not authorize(ctx, AclOperation.DELETE, TOPIC, topic):
        out["error_code"] = ErrorCode.topic_authorization_failed
        return out
    if plog is None:
        out["error_code"] = ErrorCode.unknown_topic_or_partition
        return out
    if offset == HIGH_WATERMARK:
        offset = plog.high_watermark
    try:
        start = plog.delete_records_before(offset)
    except OffsetOutOfRangeError:
        out["error_code"] = ErrorCode.offset_out_of_range
        return out
    except KafkaStorageError as e:  # a full or unwritable disk: nothing changed
        log.warning("delete records %s-%d before %d: %s", topic, partition, offset, e)
        out["error_code"] = ErrorCode.kafka_storage_error
        return out
    out["low_watermark"] = start
    log.info("delete records %s-%d before %d: log start offset now %d",
             topic, partition, offset, start)
    return out


@api(21, "DeleteRecords", 0, 2)
async def handle_delete_records(ctx: RequestContext, request: Any) -> Any:
    topics = []
    for t in request.topics:
        parts = [_delete(ctx, t.name, p.partition_index, p.offset) for p in t.partitions]
        topics.append({"name": t.name, "partitions": parts})
    return build(response_class(21, ctx.version), throttle_time=0, topics=topics)

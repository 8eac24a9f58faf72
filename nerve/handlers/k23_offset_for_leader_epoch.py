"""OffsetForLeaderEpoch (key 23), versions 2-4.

Behaviour: every partition has had one leader, this node, with leader epoch 0 (what Metadata
reports). For a requested epoch >= 0 the answer is leader_epoch 0 and end_offset = the log end
offset (the high watermark: a single node has no uncommitted tail), so a consumer validating
its position after a metadata change never sees a truncation. Kafka would answer an epoch above
its latest with -1/-1, which makes consumers reset; with one epoch here any such epoch can only
come from outside (e.g. a client that talked to another cluster), and "nothing was truncated"
is the true answer. A negative requested epoch: -1/-1 without error. current_leader_epoch
(when not -1) must be 0: above is UNKNOWN_LEADER_EPOCH, below FENCED_LEADER_EPOCH. Unknown
topic or partition: UNKNOWN_TOPIC_OR_PARTITION.
Known gaps: follower requests (replica_id >= 0) are answered like consumer ones.
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class

LEADER_EPOCH = 0


def _end_offset(ctx: RequestContext, topic: str, p: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"partition": p.partition, "error_code": ErrorCode.none,
                           "leader_epoch": -1, "end_offset": -1}
    plog = ctx.broker.logs.get_log(topic, p.partition)
    current = getattr(p, "current_leader_epoch", -1)
    if plog is None:
        out["error_code"] = ErrorCode.unknown_topic_or_partition
    elif current > LEADER_EPOCH:
        out["error_code"] = ErrorCode.unknown_leader_epoch
    elif current < -1:  # below our only epoch (-1 means: do not check)
        out["error_code"] = ErrorCode.fenced_leader_epoch
    elif p.leader_epoch >= 0:
        out["leader_epoch"] = LEADER_EPOCH
        out["end_offset"] = plog.high_watermark
    return out


@api(23, "OffsetForLeaderEpoch", 2, 4)
async def handle_offset_for_leader_epoch(ctx: RequestContext, request: Any) -> Any:
    topics = [
        {"topic": t.topic, "partitions": [_end_offset(ctx, t.topic, p) for p in t.partitions]}
        for t in request.topics
    ]
    return build(response_class(23, ctx.version), throttle_time=0, topics=topics)

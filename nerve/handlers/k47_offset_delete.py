"""OffsetDelete (key 47), version 0.

Behaviour: deletes committed offsets of a group (durably). Top level: GROUP_ID_NOT_FOUND for
a group that does not exist, NON_EMPTY_GROUP for a non-consumer group that has members. Per
partition: GROUP_SUBSCRIBED_TO_TOPIC when the (consumer) group has members subscribed to the
topic, as read from their subscription metadata; UNKNOWN_TOPIC_OR_PARTITION for a topic or
partition that does not exist (as Kafka 4 answers).
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import coordinator_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import GROUP, TOPIC, AclOperation, authorize


@api(47, "OffsetDelete", 0, 0)
async def handle_offset_delete(ctx: RequestContext, request: Any) -> Any:
    coordinator = coordinator_of(ctx.broker)
    readable = {t.name for t in request.topics if authorize(ctx, AclOperation.READ, TOPIC, t.name)}
    wanted = [(t.name, p.partition_index) for t in request.topics for p in t.partitions
              if t.name in readable]
    if not authorize(ctx, AclOperation.DELETE, GROUP, request.group_id):
        top, per = ErrorCode.group_authorization_failed, {}
    elif coordinator is None:
        top, per = ErrorCode.coordinator_not_available, {}
    else:
        top, per = await coordinator.delete_offsets(request.group_id, wanted)
        per = {**dict.fromkeys(
            ((t.name, p.partition_index) for t in request.topics for p in t.partitions),
            ErrorCode.topic_authorization_failed), **per}
    topics = []
    if top is ErrorCode.none:
        topics = [
            {"name": t.name, "partitions": [
                {"partition_index": p.partition_index,
                 "error_code": per[(t.name, p.partition_index)]}
                for p in t.partitions
            ]}
            for t in request.topics
        ]
    return build(response_class(47, ctx.version), throttle_time=0, error_code=top,
                 topics=topics)

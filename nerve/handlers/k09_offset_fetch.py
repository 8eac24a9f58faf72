"""OffsetFetch (key 9), versions 1-9.

Behaviour: committed offset, leader epoch and metadata per partition; -1 (offset and leader
epoch) and "" where nothing is committed, including for groups and topics that do not exist
(as Kafka answers). A null topic list (v2+) means every partition the group has committed.
Only durable commits are visible.
Version notes: v1 reports errors per partition; v2+ a top-level error; v5+ leader epochs; v7
require_stable (nothing is ever unstable here: no transactional offset commits yet); v8+
several groups per request, each with its own error.
Known gaps: require_stable has nothing to wait for until TxnOffsetCommit exists.
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import GroupCoordinator, coordinator_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class


def _topics(
    coordinator: GroupCoordinator | None, group_id: str, requested: Any
) -> tuple[ErrorCode, list[dict[str, Any]]]:
    wanted = None if requested is None else [
        (t.name, list(t.partition_indexes)) for t in requested
    ]
    if coordinator is None:
        error = ErrorCode.coordinator_not_available
        found: list[tuple[str, list[tuple[int, Any]]]] = [
            (name, [(p, None) for p in parts]) for name, parts in (wanted or [])
        ]
    else:
        error = ErrorCode.none
        found = coordinator.fetch_offsets(group_id, wanted)
    topics = []
    for name, parts in found:
        partitions = []
        for p, om in parts:
            partitions.append({
                "partition_index": p,
                "committed_offset": -1 if om is None else om.offset,
                "committed_leader_epoch": -1 if om is None else om.leader_epoch,
                "metadata": "" if om is None else om.metadata,
                "error_code": error,
            })
        topics.append({"name": name, "partitions": partitions})
    return error, topics


@api(9, "OffsetFetch", 1, 9)
async def handle_offset_fetch(ctx: RequestContext, request: Any) -> Any:
    coordinator = coordinator_of(ctx.broker)
    if ctx.version >= 8:
        groups = []
        for g in request.groups:
            error, topics = _topics(coordinator, g.group_id, g.topics)
            groups.append({"group_id": g.group_id, "topics": topics, "error_code": error})
        return build(response_class(9, ctx.version), throttle_time=0, groups=groups)
    error, topics = _topics(coordinator, request.group_id, request.topics)
    return build(response_class(9, ctx.version), throttle_time=0, topics=topics,
                 error_code=error)

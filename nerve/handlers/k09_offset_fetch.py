"""OffsetFetch (key 9), versions 1-9.

Behaviour: committed offset, leader epoch and metadata per partition; -1 (offset and leader
epoch) and "" where nothing is committed, including for groups and topics that do not exist
(as Kafka answers). A null topic list (v2+) means every partition the group has committed.
Only durable commits are visible; offsets staged by TxnOffsetCommit only once their
transaction commits.
Version notes: v1 reports errors per partition; v2+ a top-level error; v5+ leader epochs; v7
require_stable: a partition with a staged transactional offset answers UNSTABLE_OFFSET_COMMIT
(offset -1), as Kafka does, and the client retries; v8+ several groups per request, each with
its own error.
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import GroupCoordinator, coordinator_of
from nerve.coordinator.transactions import TransactionCoordinator, transactions_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import GROUP, TOPIC, AclOperation, authorize


def _topics(
    ctx: RequestContext, coordinator: GroupCoordinator | None, group_id: str, requested: Any,
    txn: TransactionCoordinator | None = None,
) -> tuple[ErrorCode, list[dict[str, Any]]]:
    # Kafka: DESCRIBE on the group; topics without DESCRIBE are TOPIC_AUTHORIZATION_FAILED
    # when named and left out of an all-topics answer.
    if not authorize(ctx, AclOperation.DESCRIBE, GROUP, group_id):
        return ErrorCode.group_authorization_failed, []
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
        if not authorize(ctx, AclOperation.DESCRIBE, TOPIC, name):
            if requested is not None:
                topics.append({"name": name, "partitions": [
                    {"partition_index": p, "committed_offset": -1, "committed_leader_epoch": -1,
                     "metadata": "", "error_code": ErrorCode.topic_authorization_failed}
                    for p, _ in parts]})
            continue
        for p, om in parts:
            if txn is not None and txn.has_pending_offsets(group_id, (name, p)):
                partitions.append({"partition_index": p, "committed_offset": -1,
                                   "committed_leader_epoch": -1, "metadata": "",
                                   "error_code": ErrorCode.unstable_offset_commit})
                continue
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
    txn = transactions_of(ctx.broker) if getattr(request, "require_stable", False) else None
    if ctx.version >= 8:
        groups = []
        for g in request.groups:
            error, topics = _topics(ctx, coordinator, g.group_id, g.topics, txn)
            groups.append({"group_id": g.group_id, "topics": topics, "error_code": error})
        return build(response_class(9, ctx.version), throttle_time=0, groups=groups)
    error, topics = _topics(ctx, coordinator, request.group_id, request.topics, txn)
    return build(response_class(9, ctx.version), throttle_time=0, topics=topics,
                 error_code=error)

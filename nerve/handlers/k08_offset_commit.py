"""OffsetCommit (key 8), versions 2-9.

Behaviour: commits are durable (fsynced in the coordinator's offsets log, group-committed
with other commits) before the answer. Offset, leader epoch and metadata string round-trip
exactly (null metadata is stored as "", as Kafka does). Group rules (Kafka 4, classic groups):
generation -1 with an empty member id on a group without members is a "simple" commit
(assign() consumers, admin tools) and creates the group if needed; otherwise the member must be
known (UNKNOWN_MEMBER_ID), not fenced (FENCED_INSTANCE_ID) and of the current generation
(ILLEGAL_GENERATION); in CompletingRebalance REBALANCE_IN_PROGRESS; a commit from a member
counts as a heartbeat. A generation >= 0 for a group that does not exist: GROUP_ID_NOT_FOUND
from v9, ILLEGAL_GENERATION before. Per partition: UNKNOWN_TOPIC_OR_PARTITION for a topic or
partition that does not exist, OFFSET_METADATA_TOO_LARGE above 4096 bytes.
Version notes: v2-4 retention_time (-1: the broker's offsets.retention.minutes rules; otherwise
an explicit expiry for these offsets); v6+ committed_leader_epoch; v7+ group_instance_id.
Known gaps: none known for classic groups (KIP-848 member epochs are not served).
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import coordinator_of
from nerve.coordinator.offsets import OffsetAndMetadata
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, ms, response_class
from nerve.security.acl import GROUP, TOPIC, AclOperation, authorize


@api(8, "OffsetCommit", 2, 9)
async def handle_offset_commit(ctx: RequestContext, request: Any) -> Any:
    now = ctx.now_ms()
    retention = getattr(request, "retention_time", None)
    retention_ms = -1 if retention is None else ms(retention)
    expire = now + retention_ms if retention_ms >= 0 else -1
    entries = [
        (t.name, p.partition_index, OffsetAndMetadata(
            p.committed_offset, int(getattr(p, "committed_leader_epoch", -1)),
            p.committed_metadata or "", now, expire))
        for t in request.topics for p in t.partitions
    ]
    coordinator = coordinator_of(ctx.broker)
    # Kafka: READ on the group (else every partition fails), then READ on each topic.
    denied: list[ErrorCode | None] = (
        [ErrorCode.group_authorization_failed] * len(entries)
        if not authorize(ctx, AclOperation.READ, GROUP, request.group_id) else
        [None if authorize(ctx, AclOperation.READ, TOPIC, e[0]) else
         ErrorCode.topic_authorization_failed for e in entries])
    entries = [e for e, d in zip(entries, denied, strict=True) if d is None]
    if not entries:
        errors: list[ErrorCode] = []
    elif coordinator is None:
        errors = [ErrorCode.coordinator_not_available] * len(entries)
    else:
        errors = await coordinator.commit_offsets(
            request.group_id,
            member_id=request.member_id,
            group_instance_id=getattr(request, "group_instance_id", None),
            generation_id=request.generation_id_or_member_epoch,
            offsets=entries,
            api_version=ctx.version,
        )
    it = iter(errors)
    codes = iter([d if d is not None else next(it) for d in denied])
    return build(response_class(8, ctx.version), throttle_time=0, topics=[
        {"name": t.name, "partitions": [
            {"partition_index": p.partition_index, "error_code": next(codes)}
            for p in t.partitions
        ]}
        for t in request.topics
    ])

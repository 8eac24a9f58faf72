"""TxnOffsetCommit (key 28), versions 0-3: offsets committed inside a transaction.

Behaviour: the offsets are staged with the transaction (durably, in the transaction log) and
become committed offsets only when EndTxn commits; an abort drops them. Until then OffsetFetch
does not see them (with require_stable it answers UNSTABLE_OFFSET_COMMIT for the partition).
The group must have been added with AddOffsetsToTxn (else INVALID_TXN_STATE); v3+ carries the
consumer's generation and member id (KIP-447), checked as OffsetCommit checks them when the
group has members. Producer errors: INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED
(INVALID_PRODUCER_EPOCH before v3); unknown partitions: UNKNOWN_TOPIC_OR_PARTITION.
Version notes: v4+ (transaction version 2) is not served.
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import coordinator_of
from nerve.coordinator.offsets import OffsetAndMetadata
from nerve.coordinator.transactions import fenced_code, transactions_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import GROUP, TOPIC, TRANSACTIONAL_ID, AclOperation, authorize


@api(28, "TxnOffsetCommit", 0, 3)
async def handle_txn_offset_commit(ctx: RequestContext, request: Any) -> Any:
    now = ctx.now_ms()
    entries = [
        (t.name, p.partition_index, OffsetAndMetadata(
            p.committed_offset, int(getattr(p, "committed_leader_epoch", -1)),
            p.committed_metadata or "", now))
        for t in request.topics for p in t.partitions
    ]
    txn = transactions_of(ctx.broker)
    groups = coordinator_of(ctx.broker)
    # Kafka: WRITE on the transactional id, READ on the group, READ per topic.
    unreadable = {e[0] for e in entries if not authorize(ctx, AclOperation.READ, TOPIC, e[0])}
    entries_ok = [e for e in entries if e[0] not in unreadable]
    if not authorize(ctx, AclOperation.WRITE, TRANSACTIONAL_ID, request.transactional_id):
        code = ErrorCode.transactional_id_authorization_failed
    elif not authorize(ctx, AclOperation.READ, GROUP, request.group_id):
        code = ErrorCode.group_authorization_failed
    elif txn is None or groups is None:
        code = ErrorCode.coordinator_not_available
    else:
        code = ErrorCode.none
        generation = int(getattr(request, "generation_id", -1))
        group = groups.groups.get(request.group_id)
        if generation >= 0 and group is not None:
            code = group.validate_offset_commit(
                member_id=getattr(request, "member_id", ""),
                group_instance_id=getattr(request, "group_instance_id", None),
                generation_id=generation)
        if code is ErrorCode.none:
            code = await txn.txn_offset_commit(request.transactional_id, request.producer_id,
                                               request.producer_epoch, request.group_id,
                                               [e for e in entries_ok
                                                if ctx.broker.logs.get_log(e[0], e[1])])
            code = fenced_code(code, ctx.version, 3)
    it = iter(entries)

    def partition_code() -> ErrorCode:
        topic, partition, _ = next(it)
        if code is ErrorCode.none and topic in unreadable:
            return ErrorCode.topic_authorization_failed
        if code is ErrorCode.none and ctx.broker.logs.get_log(topic, partition) is None:
            return ErrorCode.unknown_topic_or_partition
        return code

    return build(response_class(28, ctx.version), throttle_time=0, topics=[
        {"name": t.name, "partitions": [
            {"partition_index": p.partition_index, "error_code": partition_code()}
            for p in t.partitions
        ]}
        for t in request.topics
    ])

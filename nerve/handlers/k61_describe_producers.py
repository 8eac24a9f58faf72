"""DescribeProducers (key 61), version 0: the active producers of partitions (KIP-664; used by
`kafka-transactions describe-producers` and `find-hanging`).

Behaviour: per partition, every producer id the partition's producer state knows: its epoch,
last sequence, the timestamp of its last batch, and the first offset of its open transaction
(-1 when none; coordinator_epoch is -1 then, else 0: this node's only coordinator epoch).
Unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION.
Producer ids idle for `producer.id.expiration.ms` without an open transaction are forgotten
(checked every `producer.id.expiration.check.interval.ms`), so they are no longer listed.
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import TOPIC, AclOperation, authorize


def _partition(ctx: RequestContext, topic: str, index: int) -> dict[str, Any]:
    plog = ctx.broker.logs.get_log(topic, index)
    if not authorize(ctx, AclOperation.READ, TOPIC, topic):
        return {"partition_index": index, "error_code": ErrorCode.topic_authorization_failed,
                "error_message": None, "active_producers": []}
    if plog is None:
        return {"partition_index": index, "error_code": ErrorCode.unknown_topic_or_partition,
                "error_message": None, "active_producers": []}
    ongoing = plog.txn.ongoing
    producers = []
    for pid, entry in sorted(plog.producer_state().items()):
        first = ongoing.get(pid, -1)
        producers.append({
            "producer_id": pid, "producer_epoch": entry.epoch,
            "last_sequence": entry.last_seq, "last_timestamp": entry.last_timestamp,
            "coordinator_epoch": 0 if first >= 0 else -1, "current_txn_start_offset": first,
        })
    return {"partition_index": index, "error_code": ErrorCode.none, "error_message": None,
            "active_producers": producers}


@api(61, "DescribeProducers", 0, 0)
async def handle_describe_producers(ctx: RequestContext, request: Any) -> Any:
    return build(response_class(61, ctx.version), throttle_time=0, topics=[
        {"name": t.name, "partitions": [_partition(ctx, t.name, int(p))
                                        for p in t.partition_indexes]}
        for t in request.topics
    ])

"""AddPartitionsToTxn (key 24), versions 0-3: a transactional producer adds partitions to its
transaction before producing to them.

Behaviour (Kafka's TransactionCoordinator): an unknown transactional id or a producer id that
is not its current one: INVALID_PRODUCER_ID_MAPPING; an older epoch: PRODUCER_FENCED
(INVALID_PRODUCER_EPOCH before v2, as Kafka maps it); a transaction completing meanwhile:
CONCURRENT_TRANSACTIONS (clients retry); an unknown partition: UNKNOWN_TOPIC_OR_PARTITION and
OPERATION_NOT_ATTEMPTED for the rest. The first add starts the transaction (Ongoing).
Version notes: v4+ (broker-to-broker verification, KIP-890) is not served: this node is its
own coordinator, and clients send v4+ only under transaction version 2, which nerve does not
finalize.
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.transactions import TxnError, fenced_code, transactions_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import TOPIC, TRANSACTIONAL_ID, AclOperation, authorize


@api(24, "AddPartitionsToTxn", 0, 3)
async def handle_add_partitions_to_txn(ctx: RequestContext, request: Any) -> Any:
    wanted = [(t.name, int(p)) for t in request.v3_and_below_topics for p in t.partitions]
    txn = transactions_of(ctx.broker)
    unwritable = {t for t, _ in wanted if not authorize(ctx, AclOperation.WRITE, TOPIC, t)}
    if not authorize(ctx, AclOperation.WRITE, TRANSACTIONAL_ID,
                     request.v3_and_below_transactional_id):
        results = dict.fromkeys(wanted, ErrorCode.transactional_id_authorization_failed)
    elif unwritable:  # Kafka: the others are not attempted
        results = {tp: ErrorCode.topic_authorization_failed if tp[0] in unwritable
                   else ErrorCode.operation_not_attempted for tp in wanted}
    elif txn is None:
        results = dict.fromkeys(wanted, ErrorCode.coordinator_not_available)
    else:
        try:
            results = await txn.add_partitions(
                request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
                request.v3_and_below_producer_epoch, wanted)
        except TxnError as e:
            results = dict.fromkeys(wanted, fenced_code(e.code, ctx.version, 2))
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, partition), code in results.items():
        by_topic.setdefault(topic, []).append(
            {"partition_index": partition, "partition_error_code": code})
    return build(response_class(24, ctx.version), throttle_time=0, results_by_topic_v3_and_below=[
        {"name": topic, "results_by_partition": parts} for topic, parts in by_topic.items()
    ])

"""DescribeTransactions (key 65), version 0: the coordinator's view of transactional ids
(KIP-664; `kafka-transactions describe`).

Behaviour: state name as Kafka spells it (Empty, Ongoing, PrepareCommit, ...), timeout, start
time of the open transaction (-1 when none), producer id and epoch, and its partitions. An id
this coordinator does not know: TRANSACTIONAL_ID_NOT_FOUND. While the coordinator is not
running: COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

import datetime
from typing import Any

from nerve.coordinator.transactions import transactions_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import TOPIC, TRANSACTIONAL_ID, AclOperation, authorize


def _time(ms: int) -> datetime.datetime:
    # -1 (no open transaction) as Kafka sends it: kio's writer takes a datetime, never None.
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        milliseconds=ms)


def _missing(tid: str, code: ErrorCode) -> dict[str, Any]:
    return {"error_code": code, "transactional_id": tid, "transaction_state": "",
            "transaction_timeout": 0, "transaction_start_time": _time(0), "producer_id": -1,
            "producer_epoch": -1, "topics": []}


@api(65, "DescribeTransactions", 0, 0)
async def handle_describe_transactions(ctx: RequestContext, request: Any) -> Any:
    txn = transactions_of(ctx.broker)
    states = []
    for tid in request.transactional_ids:
        meta = txn.txns.get(tid) if txn is not None else None
        if not authorize(ctx, AclOperation.DESCRIBE, TRANSACTIONAL_ID, tid):
            states.append(_missing(tid, ErrorCode.transactional_id_authorization_failed))
            continue
        if txn is None:
            states.append(_missing(tid, ErrorCode.coordinator_not_available))
            continue
        if meta is None:
            states.append(_missing(tid, ErrorCode.transactional_id_not_found))
            continue
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(meta.partitions):
            if not authorize(ctx, AclOperation.DESCRIBE, TOPIC, topic):
                continue  # Kafka leaves out the topics the principal may not describe
            by_topic.setdefault(topic, []).append(partition)
        states.append({
            "error_code": ErrorCode.none, "transactional_id": tid,
            "transaction_state": meta.state.value, "transaction_timeout": meta.timeout_ms,
            "transaction_start_time": _time(meta.start_ms), "producer_id": meta.producer_id,
            "producer_epoch": meta.producer_epoch,
            "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()],
        })
    return build(response_class(65, ctx.version), throttle_time=0, transaction_states=states)

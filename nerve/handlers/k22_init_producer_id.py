"""InitProducerId (key 22), versions 0-5: producer ids for idempotent and transactional producers.

Behaviour:
- transactional_id null, no producer id: a fresh producer id (from the persisted id blocks of
  `ProducerIdManager`) with epoch 0.
- transactional_id null with producer_id and producer_epoch (v3+, KIP-360: an idempotent
  producer re-initialising after an error): the same id with the epoch bumped, so the producer
  restarts its sequences at 0 without losing its identity; at the largest epoch (32766) a
  fresh id with epoch 0 instead. Kafka 4's coordinator ignores the pair for idempotent
  producers and always hands out a fresh id with epoch 0; clients accept either answer
  (they reset their sequences in both cases). Only one of the two set: INVALID_REQUEST (as
  Kafka's KafkaApis).
- A non-null transactional_id: the transaction coordinator (nerve/coordinator/transactions.py)
  hands out the id's producer id with its epoch bumped (a new id with epoch 0 the first time),
  which fences any older producer of that id and aborts a transaction it left open. A
  transaction_timeout_ms <= 0 or above `transaction.max.timeout.ms`:
  INVALID_TRANSACTION_TIMEOUT. With producer_id/epoch (KIP-360), only the current producer (or
  a retry of its last bump) is accepted, else PRODUCER_FENCED (INVALID_PRODUCER_EPOCH before
  v4). A transaction being completed: CONCURRENT_TRANSACTIONS (clients retry).
Known gaps: v6 (KIP-939 two-phase commit) is not served.
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.transactions import TxnError, fenced_code, transactions_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, ms, response_class
from nerve.security.acl import (
    CLUSTER,
    TOPIC,
    TRANSACTIONAL_ID,
    AclOperation,
    authorize,
    authorize_by_resource_type,
)

MAX_EPOCH = 32766  # Short.MAX_VALUE - 1: Kafka keeps 32767 unused so a bump never overflows


@api(22, "InitProducerId", 0, 5)
async def handle_init_producer_id(ctx: RequestContext, request: Any) -> Any:
    cls = response_class(22, ctx.version)
    pid = getattr(request, "producer_id", -1)
    epoch = getattr(request, "producer_epoch", -1)
    if request.transactional_id is not None:
        if not authorize(ctx, AclOperation.WRITE, TRANSACTIONAL_ID, request.transactional_id):
            return build(cls, throttle_time=0, producer_id=-1, producer_epoch=-1,
                         error_code=ErrorCode.transactional_id_authorization_failed)
        return await _transactional(ctx, request, cls, pid, epoch)
    # Kafka (KIP-679): IDEMPOTENT_WRITE on the cluster, or WRITE on any topic.
    if not (authorize(ctx, AclOperation.IDEMPOTENT_WRITE, CLUSTER)
            or authorize_by_resource_type(ctx, AclOperation.WRITE, TOPIC)):
        return build(cls, throttle_time=0, error_code=ErrorCode.cluster_authorization_failed,
                     producer_id=-1, producer_epoch=-1)
    if (pid == -1) != (epoch == -1):
        return build(cls, throttle_time=0, error_code=ErrorCode.invalid_request,
                     producer_id=-1, producer_epoch=-1)
    if pid >= 0 and 0 <= epoch < MAX_EPOCH:
        new_pid, new_epoch = pid, epoch + 1
    else:
        new_pid, new_epoch = ctx.broker.producer_ids.next_producer_id(), 0
    return build(cls, throttle_time=0, error_code=ErrorCode.none,
                 producer_id=new_pid, producer_epoch=new_epoch)


async def _transactional(ctx: RequestContext, request: Any, cls: Any, pid: int,
                         epoch: int) -> Any:
    txn = transactions_of(ctx.broker)
    if txn is None:
        return build(cls, throttle_time=0, error_code=ErrorCode.coordinator_not_available,
                     producer_id=-1, producer_epoch=-1)
    if (pid == -1) != (epoch == -1):
        return build(cls, throttle_time=0, error_code=ErrorCode.invalid_request,
                     producer_id=-1, producer_epoch=-1)
    try:
        new_pid, new_epoch = await txn.init_producer_id(
            request.transactional_id, ms(request.transaction_timeout), pid, epoch)
    except TxnError as e:
        return build(cls, throttle_time=0, error_code=fenced_code(e.code, ctx.version, 4),
                     producer_id=-1, producer_epoch=-1)
    return build(cls, throttle_time=0, error_code=ErrorCode.none, producer_id=new_pid,
                 producer_epoch=new_epoch)

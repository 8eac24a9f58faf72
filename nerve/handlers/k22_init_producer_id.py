"""InitProducerId (key 22), versions 0-5: producer ids for idempotent producers.

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
- A non-null transactional_id: INVALID_REQUEST, logged at WARNING (once per transactional
  id). nerve has no transaction coordinator yet. Java producers fail at once (a fatal
  "Unexpected error in InitProducerIdResponse; ...sent to an incompatible broker");
  librdkafka retries every 500 ms and its init_transactions() ends with "Failed to initialize
  Producer ID: Broker: Invalid request" - both name the cause, where a coordinator error
  (COORDINATOR_NOT_AVAILABLE) would only give a timeout. The response has no message field.
Known gaps: transactions; transaction_timeout_ms is ignored.
"""

from __future__ import annotations

import logging
from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class

log = logging.getLogger("nerve.producers")

_warned: set[str] = set()
MAX_EPOCH = 32766  # Short.MAX_VALUE - 1: Kafka keeps 32767 unused so a bump never overflows


@api(22, "InitProducerId", 0, 5)
async def handle_init_producer_id(ctx: RequestContext, request: Any) -> Any:
    cls = response_class(22, ctx.version)
    pid = getattr(request, "producer_id", -1)
    epoch = getattr(request, "producer_epoch", -1)
    if request.transactional_id is not None:
        # librdkafka retries every 500 ms: warn once per id, not once per retry
        level = logging.DEBUG if request.transactional_id in _warned else logging.WARNING
        if len(_warned) < 10_000:
            _warned.add(request.transactional_id)
        log.log(level, "InitProducerId for transactional.id %r from %s refused: transactions "
                "are not supported yet", request.transactional_id, ctx.header.client_id)
        return build(cls, throttle_time=0, error_code=ErrorCode.invalid_request,
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

"""ListTransactions (key 66), versions 0-2: the transactional ids of this coordinator (KIP-664;
`kafka-transactions list`).

Behaviour: filters as Kafka's: state names (unknown ones are echoed in unknown_state_filters
and match nothing), producer ids, v1+ duration_filter (only transactions open at least that
many ms), v2+ transactional_id_pattern (a regular expression the whole id must match; an
invalid one is INVALID_REGULAR_EXPRESSION). While the coordinator is not running:
COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

import re
from typing import Any

from nerve.coordinator.transactions import TxnState, transactions_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import TRANSACTIONAL_ID, AclOperation, authorize

_STATES = {s.value for s in TxnState}


@api(66, "ListTransactions", 0, 2)
async def handle_list_transactions(ctx: RequestContext, request: Any) -> Any:
    cls = response_class(66, ctx.version)
    txn = transactions_of(ctx.broker)
    if txn is None:
        return build(cls, throttle_time=0, error_code=ErrorCode.coordinator_not_available,
                     unknown_state_filters=[], transaction_states=[])
    wanted_states = set(request.state_filters)
    unknown = sorted(wanted_states - _STATES)
    pids = set(request.producer_id_filters)
    duration = int(getattr(request, "duration_filter", -1))
    pattern = getattr(request, "transactional_id_pattern", None)
    matcher = None
    if pattern:
        try:
            matcher = re.compile(pattern)
        except (re.error, RecursionError, OverflowError):
            return build(cls, throttle_time=0, error_code=ErrorCode.invalid_regular_expression,
                         unknown_state_filters=unknown, transaction_states=[])
    now = txn.now_ms()
    states = []
    for tid, meta in sorted(txn.txns.items()):
        if wanted_states and meta.state.value not in wanted_states:
            continue
        if pids and meta.producer_id not in pids:
            continue
        if duration >= 0 and (meta.start_ms < 0 or now - meta.start_ms < duration):
            continue
        if matcher is not None and not matcher.fullmatch(tid):
            continue
        if not authorize(ctx, AclOperation.DESCRIBE, TRANSACTIONAL_ID, tid):
            continue
        states.append({"transactional_id": tid, "producer_id": meta.producer_id,
                       "transaction_state": meta.state.value})
    return build(cls, throttle_time=0, error_code=ErrorCode.none,
                 unknown_state_filters=unknown, transaction_states=states)

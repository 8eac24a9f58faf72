"""AddOffsetsToTxn (key 25), versions 0-3: a transactional producer announces that it will
commit offsets of `group_id` in its transaction (send_offsets_to_transaction, KIP-98/447).

Behaviour: the same producer checks as AddPartitionsToTxn (INVALID_PRODUCER_ID_MAPPING,
PRODUCER_FENCED / INVALID_PRODUCER_EPOCH before v2, CONCURRENT_TRANSACTIONS); the group is
recorded with the transaction, which becomes Ongoing. The offsets come with TxnOffsetCommit.
Version notes: v4 belongs to transaction version 2 (not finalized by nerve).
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.transactions import TxnError, fenced_code, transactions_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import GROUP, TRANSACTIONAL_ID, AclOperation, authorize


@api(25, "AddOffsetsToTxn", 0, 3)
async def handle_add_offsets_to_txn(ctx: RequestContext, request: Any) -> Any:
    txn = transactions_of(ctx.broker)
    code = ErrorCode.none
    if not authorize(ctx, AclOperation.WRITE, TRANSACTIONAL_ID, request.transactional_id):
        code = ErrorCode.transactional_id_authorization_failed
    elif not authorize(ctx, AclOperation.READ, GROUP, request.group_id):
        code = ErrorCode.group_authorization_failed
    elif txn is None:
        code = ErrorCode.coordinator_not_available
    else:
        try:
            await txn.add_offsets(request.transactional_id, request.producer_id,
                                  request.producer_epoch, request.group_id)
        except TxnError as e:
            code = fenced_code(e.code, ctx.version, 2)
    return build(response_class(25, ctx.version), throttle_time=0, error_code=code)

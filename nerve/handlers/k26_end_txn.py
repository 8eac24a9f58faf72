"""EndTxn (key 26), versions 0-4: commit or abort the producer's transaction.

Behaviour: PrepareCommit/PrepareAbort is made durable, then a COMMIT/ABORT control batch is
written to every partition of the transaction and fsynced, offsets from TxnOffsetCommit are
committed (commit) or dropped (abort), then CompleteCommit/CompleteAbort; the answer follows.
A retried EndTxn of a completed transaction with the same outcome: NONE; the other outcome or
no transaction (Empty): INVALID_TXN_STATE. Producer checks as AddPartitionsToTxn
(PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v2).
Version notes: v5 (transaction version 2: an epoch bump per transaction) is not served.
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.transactions import TxnError, fenced_code, transactions_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import TRANSACTIONAL_ID, AclOperation, authorize


@api(26, "EndTxn", 0, 4)
async def handle_end_txn(ctx: RequestContext, request: Any) -> Any:
    txn = transactions_of(ctx.broker)
    code = ErrorCode.none
    if not authorize(ctx, AclOperation.WRITE, TRANSACTIONAL_ID, request.transactional_id):
        code = ErrorCode.transactional_id_authorization_failed
    elif txn is None:
        code = ErrorCode.coordinator_not_available
    else:
        try:
            await txn.end_txn(request.transactional_id, request.producer_id,
                              request.producer_epoch, bool(request.committed))
        except TxnError as e:
            code = fenced_code(e.code, ctx.version, 2)
    return build(response_class(26, ctx.version), throttle_time=0, error_code=code)

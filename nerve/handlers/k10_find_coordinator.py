"""FindCoordinator (key 10), versions 0-6.

Behaviour: this broker coordinates every group, so key_type 0 (group) answers with this node
for any key. key_type 1 (transaction) answers with this node while its
transaction coordinator runs; other key types get INVALID_REQUEST. While the coordinator asked
for is not running (during start or stop) the answer is COORDINATOR_NOT_AVAILABLE, which
clients retry.
Version notes: v0 has no key_type (always a group); v4+ batch several keys in
`coordinator_keys` and answer one `coordinators` entry each.
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import coordinator_of
from nerve.coordinator.transactions import transactions_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import GROUP as GROUP_RESOURCE
from nerve.security.acl import TRANSACTIONAL_ID, AclOperation, authorize

GROUP = 0
TRANSACTION = 1


def _answer(ctx: RequestContext, key_type: int, key: str) -> tuple[ErrorCode, str | None]:
    if key_type == GROUP:
        if not authorize(ctx, AclOperation.DESCRIBE, GROUP_RESOURCE, key):
            return ErrorCode.group_authorization_failed, None
        if coordinator_of(ctx.broker) is None:
            return ErrorCode.coordinator_not_available, "the group coordinator is not running"
        return ErrorCode.none, None
    if key_type == TRANSACTION:
        if not authorize(ctx, AclOperation.DESCRIBE, TRANSACTIONAL_ID, key):
            return ErrorCode.transactional_id_authorization_failed, None
        if transactions_of(ctx.broker) is None:
            return (ErrorCode.coordinator_not_available,
                    "the transaction coordinator is not running")
        return ErrorCode.none, None
    return ErrorCode.invalid_request, f"unknown key type {key_type}"


@api(10, "FindCoordinator", 0, 6)
async def handle_find_coordinator(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    key_type = int(getattr(request, "key_type", GROUP))

    host, port = broker.endpoint(ctx.listener_name)  # the listener this client came in on

    def node(key: str) -> dict[str, Any]:
        error, message = _answer(ctx, key_type, key)
        ok = error is ErrorCode.none
        return {
            "node_id": broker.node_id if ok else -1,
            "host": host if ok else "",
            "port": port if ok else -1,
            "error_code": error,
            "error_message": message,
        }

    if ctx.version >= 4:
        return build(response_class(10, ctx.version), throttle_time=0, coordinators=[
            {**node(key), "key": key} for key in request.coordinator_keys
        ])
    return build(response_class(10, ctx.version), {**node(request.key), "throttle_time": 0})

"""SyncGroup (key 14), versions 0-5.

Behaviour: the leader sends every member's assignment (bytes, passed through untouched;
members it left out get an empty one); followers wait for it. In a Stable group any member
gets its current assignment at once (a restarted static member gets its previous one). Errors:
UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS (a new round started: re-join),
FENCED_INSTANCE_ID, INCONSISTENT_GROUP_PROTOCOL (v5 protocol type/name missing or not the
group's), INVALID_GROUP_ID.
Version notes: v3+ group_instance_id; v5 protocol_type/protocol_name in request and answer.
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import coordinator_of
from nerve.coordinator.group import SyncResult
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import GROUP, AclOperation, authorize


@api(14, "SyncGroup", 0, 5)
async def handle_sync_group(ctx: RequestContext, request: Any) -> Any:
    coordinator = coordinator_of(ctx.broker)
    protocol_type = getattr(request, "protocol_type", None)
    protocol_name = getattr(request, "protocol_name", None)
    if ctx.version >= 5 and (protocol_type is None or protocol_name is None):
        # From v5 both are mandatory; Kafka refuses before looking at the group.
        result = SyncResult(ErrorCode.inconsistent_group_protocol)
    elif not authorize(ctx, AclOperation.READ, GROUP, request.group_id):
        result = SyncResult(ErrorCode.group_authorization_failed)
    elif coordinator is None:
        result = SyncResult(ErrorCode.coordinator_not_available)
    else:
        result = await coordinator.sync_group(
            request.group_id,
            member_id=request.member_id,
            group_instance_id=getattr(request, "group_instance_id", None),
            generation_id=request.generation_id,
            protocol_type=protocol_type,
            protocol_name=protocol_name,
            assignments={a.member_id: a.assignment for a in request.assignments},
        )
    return build(
        response_class(14, ctx.version),
        throttle_time=0,
        error_code=result.error,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        assignment=result.assignment,
    )

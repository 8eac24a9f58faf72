"""Heartbeat (key 12), versions 0-4.

Behaviour: keeps a member's session alive (group.min/max.session.timeout.ms bound the session
timeout chosen at JoinGroup). NONE in Stable and CompletingRebalance; REBALANCE_IN_PROGRESS
while a round is under way (the client re-joins); UNKNOWN_MEMBER_ID for a member the group
does not know (expired, left, or the group does not exist, e.g. after a broker restart);
ILLEGAL_GENERATION for an old generation; FENCED_INSTANCE_ID when another incarnation of the
same group.instance.id has replaced this one.
Version notes: v3+ group_instance_id.
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import coordinator_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import GROUP, AclOperation, authorize


@api(12, "Heartbeat", 0, 4)
async def handle_heartbeat(ctx: RequestContext, request: Any) -> Any:
    coordinator = coordinator_of(ctx.broker)
    if not authorize(ctx, AclOperation.READ, GROUP, request.group_id):
        error = ErrorCode.group_authorization_failed
    elif coordinator is None:
        error = ErrorCode.coordinator_not_available
    else:
        error = coordinator.heartbeat(
            request.group_id,
            member_id=request.member_id,
            group_instance_id=getattr(request, "group_instance_id", None),
            generation_id=request.generation_id,
        )
    return build(response_class(12, ctx.version), throttle_time=0, error_code=error)

"""LeaveGroup (key 13), versions 0-5.

Behaviour: removes members at once (no wait for their session timeout) and starts a round for
the rest. A member named only by group_instance_id (empty member id) is the static member of
that instance. Per member: UNKNOWN_MEMBER_ID (not in the group), FENCED_INSTANCE_ID (the
instance now belongs to another member id).
Version notes: v0-2 name one member and carry its error at the top level; v3+ batch members,
with the top-level error NONE unless the whole request failed; v5 `reason` (logged only).
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import coordinator_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import GROUP, AclOperation, authorize


@api(13, "LeaveGroup", 0, 5)
async def handle_leave_group(ctx: RequestContext, request: Any) -> Any:
    version = ctx.version
    if version >= 3:
        members = [(m.member_id, m.group_instance_id) for m in request.members]
    else:
        members = [(request.member_id, None)]
    coordinator = coordinator_of(ctx.broker)
    if not authorize(ctx, AclOperation.READ, GROUP, request.group_id):
        top, errors = ErrorCode.group_authorization_failed, []
    elif coordinator is None:
        top, errors = ErrorCode.coordinator_not_available, []
    else:
        top, errors = coordinator.leave_group(request.group_id, members)
    if version < 3:
        if top is ErrorCode.none and errors:
            top = errors[0]
        return build(response_class(13, version), throttle_time=0, error_code=top)
    return build(
        response_class(13, version),
        throttle_time=0,
        error_code=top,
        members=[
            {"member_id": mid, "group_instance_id": iid, "error_code": err}
            for (mid, iid), err in zip(members, errors, strict=False)
        ],
    )

"""DeleteGroups (key 42), versions 0-2.

Behaviour: deletes empty groups and their committed offsets (durably: one tombstone in the
offsets log). Per group: GROUP_ID_NOT_FOUND if it does not exist, NON_EMPTY_GROUP while it has
members.
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import coordinator_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import GROUP, AclOperation, authorize


@api(42, "DeleteGroups", 0, 2)
async def handle_delete_groups(ctx: RequestContext, request: Any) -> Any:
    coordinator = coordinator_of(ctx.broker)
    names = list(request.groups_names)
    allowed = [g for g in names if authorize(ctx, AclOperation.DELETE, GROUP, g)]
    results = dict.fromkeys(names, ErrorCode.group_authorization_failed)
    if coordinator is None:
        results.update(dict.fromkeys(allowed, ErrorCode.coordinator_not_available))
    elif allowed:
        results.update(await coordinator.delete_groups(allowed))
    return build(response_class(42, ctx.version), throttle_time=0, results=[
        {"group_id": gid, "error_code": results[gid]} for gid in names
    ])

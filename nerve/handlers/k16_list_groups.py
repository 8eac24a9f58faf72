"""ListGroups (key 16), versions 0-5.

Behaviour: every group this broker knows, including empty groups that only hold committed
offsets ("simple" groups have protocol type "").
Version notes: v4+ states_filter (case-insensitive; empty: all) and group_state; v5+
types_filter and group_type: every group here is "classic".
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import coordinator_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import CLUSTER, GROUP, AclOperation, authorize

GROUP_TYPE = "classic"


@api(16, "ListGroups", 0, 5)
async def handle_list_groups(ctx: RequestContext, request: Any) -> Any:
    coordinator = coordinator_of(ctx.broker)
    if coordinator is None:
        return build(response_class(16, ctx.version), throttle_time=0,
                     error_code=ErrorCode.coordinator_not_available, groups=())
    states = {s.lower() for s in getattr(request, "states_filter", ()) or ()}
    types = {t.lower() for t in getattr(request, "types_filter", ()) or ()}
    groups = []
    # Kafka: DESCRIBE on the cluster lists every group, else those the principal may DESCRIBE.
    every = authorize(ctx, AclOperation.DESCRIBE, CLUSTER)
    if not types or GROUP_TYPE in types:
        for gid, protocol_type, state in coordinator.list_groups():
            if states and state.lower() not in states:
                continue
            if not every and not authorize(ctx, AclOperation.DESCRIBE, GROUP, gid):
                continue
            groups.append({"group_id": gid, "protocol_type": protocol_type,
                           "group_state": state, "group_type": GROUP_TYPE})
    return build(response_class(16, ctx.version), throttle_time=0, error_code=ErrorCode.none,
                 groups=groups)

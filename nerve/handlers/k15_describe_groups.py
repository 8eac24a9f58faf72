"""DescribeGroups (key 15), versions 0-5.

Behaviour: state, protocol type, and members (member id, group instance id, client id, client
host as "/address", as Kafka prints it). As in Kafka, the selected protocol and each member's
metadata and assignment are reported only when the group is Stable; a group that does not exist
is reported with state "Dead" and no error, which is how Kafka's tools recognise it.
Version notes: v3+ authorized_operations (reported as "not provided": -2147483648); v4+
group_instance_id.
Known gaps: authorized operations are not computed (no ACLs).
"""

from __future__ import annotations

from typing import Any

from nerve.coordinator.coordinator import coordinator_of
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import GROUP, AclOperation, authorize, authorized_operations

NO_OPERATIONS = -2147483648  # Kafka's "not computed"


@api(15, "DescribeGroups", 0, 5)
async def handle_describe_groups(ctx: RequestContext, request: Any) -> Any:
    coordinator = coordinator_of(ctx.broker)
    groups = []
    include_ops = bool(getattr(request, "include_authorized_operations", False))
    for gid in request.groups:
        entry: dict[str, Any] = {"group_id": gid, "authorized_operations": NO_OPERATIONS,
                                 "protocol_type": "", "protocol_data": "", "members": ()}
        if not authorize(ctx, AclOperation.DESCRIBE, GROUP, gid):
            groups.append({**entry, "error_code": ErrorCode.group_authorization_failed,
                           "group_state": ""})
            continue
        entry["authorized_operations"] = authorized_operations(ctx, GROUP, gid, include_ops)
        if coordinator is None:
            groups.append({**entry, "error_code": ErrorCode.coordinator_not_available,
                           "group_state": ""})
            continue
        summary = coordinator.describe_group(gid)
        if summary is None:
            groups.append({**entry, "error_code": ErrorCode.none, "group_state": "Dead"})
            continue
        groups.append({
            **entry,
            "error_code": ErrorCode.none,
            "group_state": summary.state,
            "protocol_type": summary.protocol_type,
            "protocol_data": summary.protocol_name,
            "members": [
                {"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                 "client_id": m.client_id, "client_host": m.client_host,
                 "member_metadata": m.metadata, "member_assignment": m.assignment}
                for m in summary.members
            ],
        })
    return build(response_class(15, ctx.version), throttle_time=0, groups=groups)

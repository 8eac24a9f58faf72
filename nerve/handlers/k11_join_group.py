"""JoinGroup (key 11), versions 0-9.

Behaviour: Kafka's classic group protocol (see nerve/coordinator/group.py). The answer waits
until the join round completes: group.initial.rebalance.delay.ms for a new or empty group
(extended while members keep arriving, up to the rebalance timeout), otherwise until every
known member has re-joined or the rebalance timeout passed. The leader gets every member's
protocol metadata, untouched; the group's protocol is the one all members support with the
most first-choice votes. Errors: INVALID_GROUP_ID (empty id), INVALID_SESSION_TIMEOUT (outside
group.min/max.session.timeout.ms), UNKNOWN_MEMBER_ID (unknown member, or a non-empty member id
for a group that does not exist), INCONSISTENT_GROUP_PROTOCOL, FENCED_INSTANCE_ID,
GROUP_MAX_SIZE_REACHED, MEMBER_ID_REQUIRED.
Version notes: v0 has no rebalance timeout (the session timeout is used); v4+ a new dynamic
member first gets MEMBER_ID_REQUIRED with its member id and joins again with it; v5+
group_instance_id (static membership: a restarted static member with unchanged protocols gets
the current generation back without a rebalance); v7+ protocol_type/protocol_name in the
answer; v9 skip_assignment for a static leader re-joining a stable group (before v9 that
leader is answered with the old leader id, so it does not compute an assignment).
Known gaps: the `reason` field (v8+) is only logged at debug level.
"""

from __future__ import annotations

import logging
from typing import Any

from nerve.coordinator.coordinator import coordinator_of
from nerve.coordinator.group import JoinRequest, JoinResult
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, ms, response_class
from nerve.security.acl import GROUP, AclOperation, authorize

log = logging.getLogger("nerve.groups")


@api(11, "JoinGroup", 0, 9)
async def handle_join_group(ctx: RequestContext, request: Any) -> Any:
    version = ctx.version
    session_ms = ms(request.session_timeout)
    rebalance = getattr(request, "rebalance_timeout", None)
    rebalance_ms = session_ms if rebalance is None else ms(rebalance)
    instance_id = getattr(request, "group_instance_id", None)
    coordinator = coordinator_of(ctx.broker)
    if not authorize(ctx, AclOperation.READ, GROUP, request.group_id):
        result = JoinResult(ErrorCode.group_authorization_failed, request.member_id)
    elif coordinator is None:
        result = JoinResult(ErrorCode.coordinator_not_available, request.member_id)
    else:
        if getattr(request, "reason", None):
            log.debug("join %s by %s: %s", request.group_id, request.member_id, request.reason)
        result = await coordinator.join_group(request.group_id, JoinRequest(
            member_id=request.member_id,
            group_instance_id=instance_id,
            client_id=ctx.header.client_id or "",
            client_host="/" + ctx.client_host,
            session_timeout_ms=session_ms,
            rebalance_timeout_ms=rebalance_ms,
            protocol_type=request.protocol_type,
            protocols=tuple((p.name, p.metadata) for p in request.protocols),
            require_known_member_id=version >= 4 and instance_id is None,
            supports_skip_assignment=version >= 9,
        ))
    protocol_name = result.protocol_name
    if protocol_name is None and version < 7:
        protocol_name = ""  # nullable only from v7
    return build(
        response_class(11, version),
        throttle_time=0,
        error_code=result.error,
        generation_id=result.generation_id,
        protocol_type=result.protocol_type,
        protocol_name=protocol_name,
        leader=result.leader_id,
        skip_assignment=result.skip_assignment,
        member_id=result.member_id,
        members=[
            {"member_id": m.member_id, "group_instance_id": m.group_instance_id,
             "metadata": m.metadata}
            for m in result.members
        ],
    )

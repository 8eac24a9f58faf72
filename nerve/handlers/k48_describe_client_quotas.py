"""DescribeClientQuotas (key 48), versions 0-1.

Behaviour: the quota entities matching every filter component (match type 0: that name, 1:
the default entity, 2: any name of that entity type; `strict`: no other entity types), with
their values. Needs DESCRIBE_CONFIGS on the cluster (CLUSTER_AUTHORIZATION_FAILED); a
component of an unknown entity type or a duplicated one: INVALID_REQUEST.
"""

from __future__ import annotations

from typing import Any

from nerve.broker import on_start
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import CLUSTER, AclOperation, authorize
from nerve.security.quotas import CLIENT_ID, IP, MATCH_ANY, USER, quota_store


@on_start
async def _load_quotas(core: Any) -> None:
    quota_store(core)  # a damaged quotas.json stops the start with one line


def _error(ctx: RequestContext, code: ErrorCode, message: str | None) -> Any:
    return build(response_class(48, ctx.version), throttle_time=0, error_code=code,
                 error_message=message, entries=None)


@api(48, "DescribeClientQuotas", 0, 1)
async def handle_describe_client_quotas(ctx: RequestContext, request: Any) -> Any:
    if not authorize(ctx, AclOperation.DESCRIBE_CONFIGS, CLUSTER):
        return _error(ctx, ErrorCode.cluster_authorization_failed, None)
    components = [(c.entity_type, int(c.match_type), c.match) for c in request.components]
    types = [t for t, _, _ in components]
    if len(set(types)) != len(types):
        return _error(ctx, ErrorCode.invalid_request,
                      f"Duplicate entity type in filter: {types}")
    for t, match_type, _ in components:
        if t not in (USER, CLIENT_ID, IP):
            return _error(ctx, ErrorCode.invalid_request, f"Unknown entity type: {t}")
        if not 0 <= match_type <= MATCH_ANY:
            return _error(ctx, ErrorCode.invalid_request, f"Unknown match type: {match_type}")
    found = quota_store(ctx.broker).describe(components, bool(request.strict))
    return build(response_class(48, ctx.version), throttle_time=0, error_code=ErrorCode.none,
                 error_message=None, entries=[
                     {"entity": [{"entity_type": t, "entity_name": n} for t, n in entity],
                      "values": [{"key": k, "value": v} for k, v in sorted(values.items())]}
                     for entity, values in found])

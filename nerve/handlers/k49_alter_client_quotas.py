"""AlterClientQuotas (key 49), versions 0-1.

Behaviour: sets or removes quota values per entity (`user`, `client-id`, both, or `ip`; a
null name is the default entity), durably (fsynced) before the answer; an entity left with no
values is gone. Validated as Kafka's controller does: unknown entity type, duplicated type, ip
combined with another type, unknown key, a byte rate that is not a whole number:
INVALID_REQUEST for that entry. Needs ALTER_CONFIGS on the cluster
(CLUSTER_AUTHORIZATION_FAILED). validate_only checks without storing.
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import CLUSTER, AclOperation, authorize
from nerve.security.quotas import check_entity, check_op, entity_of, quota_store


@api(49, "AlterClientQuotas", 0, 1)
async def handle_alter_client_quotas(ctx: RequestContext, request: Any) -> Any:
    allowed = authorize(ctx, AclOperation.ALTER_CONFIGS, CLUSTER)
    results = []
    changes = []
    for e in request.entries:
        entity = entity_of(e.entity)
        code, message = ErrorCode.none, None
        if not allowed:
            code = ErrorCode.cluster_authorization_failed
        else:
            why = check_entity(entity) or next(
                (w for op in e.ops if (w := check_op(entity, op.key, op.value, op.remove))),
                None)
            if why is not None:
                code, message = ErrorCode.invalid_request, why
            else:
                changes.append((entity, [(op.key, float(op.value), bool(op.remove))
                                         for op in e.ops]))
        results.append({"error_code": code, "error_message": message, "entity": [
            {"entity_type": p.entity_type, "entity_name": p.entity_name} for p in e.entity]})
    if changes and not request.validate_only:
        quota_store(ctx.broker).alter(changes)
    return build(response_class(49, ctx.version), throttle_time=0, entries=results)

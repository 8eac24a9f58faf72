"""DescribeAcls (key 29), versions 1-3 (Kafka 4 removed v0).

Behaviour: the ACLs matching the filter (Kafka's AclBindingFilter: ANY and null match all;
pattern type MATCH also finds the LITERAL `*` and PREFIXED ACLs covering the name), grouped by
resource. Needs DESCRIBE on the cluster (CLUSTER_AUTHORIZATION_FAILED); no authorizer
configured: SECURITY_DISABLED; a filter with unknown values: INVALID_REQUEST.
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import CLUSTER, AclBinding, AclOperation, acl_filter, authorize


def _error(ctx: RequestContext, code: ErrorCode, message: str) -> Any:
    return build(response_class(29, ctx.version), throttle_time=0, error_code=code,
                 error_message=message, resources=())


@api(29, "DescribeAcls", 1, 3)
async def handle_describe_acls(ctx: RequestContext, request: Any) -> Any:
    authorizer = ctx.broker.authorizer
    if authorizer is None:
        return _error(ctx, ErrorCode.security_disabled, "No Authorizer is configured.")
    if not authorize(ctx, AclOperation.DESCRIBE, CLUSTER):
        return _error(ctx, ErrorCode.cluster_authorization_failed,
                      "Cluster authorization failed.")
    f = acl_filter(request.resource_type_filter, request.resource_name_filter,
                   request.pattern_type_filter, request.principal_filter, request.host_filter,
                   request.operation, request.permission_type)
    if f.is_unknown():
        return _error(ctx, ErrorCode.invalid_request, "The filter contains UNKNOWN elements.")
    by_resource: dict[tuple[int, str, int], list[AclBinding]] = {}
    for acl in authorizer.describe(f):
        key = (acl.resource_type, acl.resource_name, acl.pattern_type)
        by_resource.setdefault(key, []).append(acl)
    resources = [
        {"resource_type": rt, "resource_name": name, "pattern_type": pt,
         "acls": [{"principal": a.principal, "host": a.host, "operation": a.operation,
                   "permission_type": a.permission} for a in acls]}
        for (rt, name, pt), acls in by_resource.items()
    ]
    return build(response_class(29, ctx.version), throttle_time=0, error_code=ErrorCode.none,
                 error_message=None, resources=resources)

"""DeleteAcls (key 31), versions 1-3 (Kafka 4 removed v0).

Behaviour: every ACL matching each filter is removed (durably, before the answer) and listed
in that filter's result. Needs ALTER on the cluster (CLUSTER_AUTHORIZATION_FAILED); no
authorizer configured: SECURITY_DISABLED; a filter with unknown values: INVALID_REQUEST.
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import CLUSTER, AclFilter, AclOperation, acl_filter, authorize


def _failed(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"error_code": code, "error_message": message, "matching_acls": ()}


@api(31, "DeleteAcls", 1, 3)
async def handle_delete_acls(ctx: RequestContext, request: Any) -> Any:
    authorizer = ctx.broker.authorizer
    n = len(request.filters)
    if authorizer is None:
        results = [_failed(ErrorCode.security_disabled, "No Authorizer is configured.")] * n
    elif not authorize(ctx, AclOperation.ALTER, CLUSTER):
        results = [_failed(ErrorCode.cluster_authorization_failed,
                           "Cluster authorization failed.")] * n
    else:
        filters: list[AclFilter | None] = []
        for f in request.filters:
            af = acl_filter(f.resource_type_filter, f.resource_name_filter,
                            f.pattern_type_filter, f.principal_filter, f.host_filter,
                            f.operation, f.permission_type)
            filters.append(None if af.is_unknown() else af)
        matched = iter(authorizer.delete([f for f in filters if f is not None]))
        results = []
        for af in filters:
            if af is None:
                results.append(_failed(ErrorCode.invalid_request, "Unknown filter elements."))
                continue
            results.append({"error_code": ErrorCode.none, "error_message": None,
                            "matching_acls": [
                                {"error_code": ErrorCode.none, "error_message": None,
                                 "resource_type": a.resource_type,
                                 "resource_name": a.resource_name,
                                 "pattern_type": a.pattern_type, "principal": a.principal,
                                 "host": a.host, "operation": a.operation,
                                 "permission_type": a.permission}
                                for a in next(matched)]})
    return build(response_class(31, ctx.version), throttle_time=0, filter_results=results)

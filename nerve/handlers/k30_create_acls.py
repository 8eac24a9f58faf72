"""CreateAcls (key 30), versions 1-3 (Kafka 4 removed v0).

Behaviour: each creation is validated as Kafka's controller does (resource type, LITERAL or
PREFIXED, operation, ALLOW/DENY, the cluster's only name `kafka-cluster`, a non-empty name, a
`Type:name` principal) and answered INVALID_REQUEST with Kafka's message when it fails; the
valid ones are stored durably (fsynced) before the answer. Needs ALTER on the cluster
(CLUSTER_AUTHORIZATION_FAILED); no authorizer configured: SECURITY_DISABLED.
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import CLUSTER, AclOperation, authorize, binding


@api(30, "CreateAcls", 1, 3)
async def handle_create_acls(ctx: RequestContext, request: Any) -> Any:
    authorizer = ctx.broker.authorizer
    n = len(request.creations)
    if authorizer is None:
        results = [{"error_code": ErrorCode.security_disabled,
                    "error_message": "No Authorizer is configured."}] * n
    elif not authorize(ctx, AclOperation.ALTER, CLUSTER):
        results = [{"error_code": ErrorCode.cluster_authorization_failed,
                    "error_message": "Cluster authorization failed."}] * n
    else:
        results = []
        valid = []
        for c in request.creations:
            acl = binding(c.resource_type, c.resource_name, c.resource_pattern_type,
                          c.principal, c.host, c.operation, c.permission_type)
            why = acl.validate()
            if why is None:
                valid.append(acl)
                results.append({"error_code": ErrorCode.none, "error_message": None})
            else:
                results.append({"error_code": ErrorCode.invalid_request, "error_message": why})
        authorizer.create(valid)
    return build(response_class(30, ctx.version), throttle_time=0, results=results)

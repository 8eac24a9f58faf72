"""DescribeUserScramCredentials (key 50), version 0.

Behaviour: the SCRAM mechanisms and iterations of each named user (never salts or keys); a
null or empty list means every user with a credential. A user without credentials gets
RESOURCE_NOT_FOUND, a name asked for twice DUPLICATE_RESOURCE, with Kafka's messages. With an
authorizer, DESCRIBE on the cluster is needed (else CLUSTER_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import CLUSTER, AclOperation, authorize
from nerve.security.scram import MECHANISM_IDS


@api(50, "DescribeUserScramCredentials", 0, 0)
async def handle_describe_user_scram_credentials(ctx: RequestContext, request: Any) -> Any:
    if not authorize(ctx, AclOperation.DESCRIBE, CLUSTER):
        return build(response_class(50, ctx.version), throttle_time=0,
                     error_code=ErrorCode.cluster_authorization_failed, error_message=None,
                     results=())
    store = ctx.broker.credentials
    names = [u.name for u in request.users] if request.users else store.users()
    counts = Counter(names)
    results = []
    for name in dict.fromkeys(names):
        if counts[name] > 1:
            results.append({"user": name, "error_code": ErrorCode.duplicate_resource,
                            "error_message": "Cannot describe SCRAM credentials for the same "
                                             "user twice in a single request",
                            "credential_infos": ()})
            continue
        creds = store.of_user(name)
        if not creds:
            results.append({"user": name, "error_code": ErrorCode.resource_not_found,
                            "error_message": "Attempt to describe a user credential that does "
                                             "not exist", "credential_infos": ()})
            continue
        results.append({"user": name, "error_code": ErrorCode.none, "error_message": None,
                        "credential_infos": [
                            {"mechanism": MECHANISM_IDS[m], "iterations": c.iterations}
                            for m, c in sorted(creds.items(), key=lambda i: MECHANISM_IDS[i[0]])
                        ]})
    return build(response_class(50, ctx.version), throttle_time=0, error_code=ErrorCode.none,
                 error_message=None, results=results)

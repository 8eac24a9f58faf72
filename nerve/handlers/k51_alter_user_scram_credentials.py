"""AlterUserScramCredentials (key 51), version 0.

Behaviour: deletions and upsertions of SCRAM credentials, one result per user named. The
client sends the salted password (it never crosses the wire in clear); the broker keeps the
salt, iterations, stored key and server key (nerve/security/credentials.py), durably (fsync,
atomic rename) before it answers. A user whose part of the request has an error changes
nothing: UNSUPPORTED_SASL_MECHANISM (unknown mechanism), UNACCEPTABLE_CREDENTIAL (empty name,
iterations outside 4096-16384, empty salt or salted password), DUPLICATE_RESOURCE (the same
user and mechanism twice), RESOURCE_NOT_FOUND (deleting what does not exist). With an
authorizer, ALTER on the cluster is needed (else CLUSTER_AUTHORIZATION_FAILED for every user).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import CLUSTER, AclOperation, authorize
from nerve.security.scram import (
    MAX_ITERATIONS,
    MECHANISM_NAMES,
    MECHANISMS,
    MIN_ITERATIONS,
    credential_from_salted,
)

log = logging.getLogger("nerve.security")


def _check(store: Any, ops: list[tuple[str, Any]]) -> tuple[ErrorCode, str | None]:
    seen: set[int] = set()
    for kind, op in ops:
        if not op.name:
            return ErrorCode.unacceptable_credential, "Username must not be empty"
        if op.mechanism in seen:
            return (ErrorCode.duplicate_resource,
                    "A user credential cannot be altered twice in the same request")
        seen.add(op.mechanism)
        mech = MECHANISM_NAMES.get(op.mechanism)
        if mech is None:
            return ErrorCode.unsupported_sasl_mechanism, "Unknown SCRAM mechanism"
        if kind == "delete":
            if store.get(op.name, mech) is None:
                return (ErrorCode.resource_not_found,
                        "Attempt to delete a user credential that does not exist")
        else:
            if op.iterations < MIN_ITERATIONS:
                return ErrorCode.unacceptable_credential, "Too few iterations"
            if op.iterations > MAX_ITERATIONS:
                return ErrorCode.unacceptable_credential, "Too many iterations"
            if not op.salt or not op.salted_password:
                return ErrorCode.unacceptable_credential, "Salt and password must not be empty"
    return ErrorCode.none, None


@api(51, "AlterUserScramCredentials", 0, 0)
async def handle_alter_user_scram_credentials(ctx: RequestContext, request: Any) -> Any:
    store = ctx.broker.credentials
    by_user: dict[str, list[tuple[str, Any]]] = {}
    for d in request.deletions:
        by_user.setdefault(d.name, []).append(("delete", d))
    for u in request.upsertions:
        by_user.setdefault(u.name, []).append(("upsert", u))
    results = []
    changed = False
    allowed = authorize(ctx, AclOperation.ALTER, CLUSTER)
    for name, ops in by_user.items():
        code, message = _check(store, ops) if allowed else (
            ErrorCode.cluster_authorization_failed, None)
        if code is ErrorCode.none:
            for kind, op in ops:
                mech = MECHANISM_NAMES[op.mechanism]
                if kind == "delete":
                    store.delete(name, mech)
                else:
                    store.upsert(name, mech, credential_from_salted(
                        MECHANISMS[mech], bytes(op.salted_password), bytes(op.salt),
                        op.iterations))
            changed = True
            log.info("SCRAM credentials of user %s altered by %s", name, ctx.principal)
        results.append({"user": name, "error_code": code, "error_message": message})
    if changed:
        lock = ctx.broker.extensions.setdefault("scram_save_lock", asyncio.Lock())
        async with lock:
            await asyncio.to_thread(store.save, store.snapshot())
    return build(response_class(51, ctx.version), throttle_time=0, results=results)

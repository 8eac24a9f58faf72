"""SaslAuthenticate (key 36), versions 0-2.

Behaviour: one SASL token of the mechanism chosen by SaslHandshake v1, answered with the
server's token. A failed exchange (wrong password, unknown user, malformed message) answers
SASL_AUTHENTICATION_FAILED with Kafka's message and the connection is then closed. Success makes
the connection's principal `User:<name>`; from v1 the answer carries session_lifetime_ms
(`connections.max.reauth.ms`, 0 when unset), after which requests other than a
re-authentication close the connection (KIP-368). Without SASL on the listener, or before a
handshake: ILLEGAL_SASL_STATE.
"""

from __future__ import annotations

import logging
from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.sasl import AuthenticationFailed

log = logging.getLogger("nerve.security")


@api(36, "SaslAuthenticate", 0, 2)
async def handle_sasl_authenticate(ctx: RequestContext, request: Any) -> Any:
    cls = response_class(36, ctx.version)
    session = ctx.session
    if session is None or not session.security.sasl or session.mechanism is None:
        if session is not None:
            session.close_reason = "SaslAuthenticate without a SaslHandshake"
        return build(cls, error_code=ErrorCode.illegal_sasl_state,
                     error_message="SaslAuthenticate before a SaslHandshake", auth_bytes=b"",
                     session_lifetime=0)
    try:
        answer, lifetime, done = session.authenticate(bytes(request.auth_bytes))
    except AuthenticationFailed as e:
        log.info("SASL/%s authentication from %s failed: %s", session.mechanism,
                 ctx.client_host, e)
        return build(cls, error_code=ErrorCode.sasl_authentication_failed,
                     error_message="Authentication failed during authentication due to invalid "
                                   f"credentials with SASL mechanism {session.mechanism}",
                     auth_bytes=b"", session_lifetime=0)
    if done:
        log.info("connection %s from %s: authenticated as %s (SASL/%s)", ctx.connection_id,
                 ctx.client_host, session.principal, session.mechanism)
    return build(cls, error_code=ErrorCode.none, error_message=None, auth_bytes=answer,
                 session_lifetime=lifetime)

"""SaslHandshake (key 17), versions 0-1.

Behaviour: on a SASL_PLAINTEXT or SASL_SSL listener, picks the mechanism for the connection's
SaslSession (nerve/security/sasl.py). A mechanism the listener does not enable gets
UNSUPPORTED_SASL_MECHANISM with the enabled list, and the connection is then closed, as Kafka
does. On a listener without SASL: ILLEGAL_SASL_STATE. After v0 the SASL tokens arrive as bare
length-prefixed frames (the connection hands them to the session); after v1 they come in
SaslAuthenticate requests. A second handshake on an authenticated connection starts a
re-authentication (KIP-368: v1 only, same mechanism).
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class


@api(17, "SaslHandshake", 0, 1)
async def handle_sasl_handshake(ctx: RequestContext, request: Any) -> Any:
    cls = response_class(17, ctx.version)
    session = ctx.session
    if session is None or not session.security.sasl:
        return build(cls, error_code=ErrorCode.illegal_sasl_state, mechanisms=())
    accepted, mechanisms = session.handshake(request.mechanism, ctx.version)
    return build(cls, error_code=ErrorCode.none if accepted
                 else ErrorCode.unsupported_sasl_mechanism, mechanisms=mechanisms)

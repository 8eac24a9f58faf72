"""A connection's authentication state, and the SASL mechanisms PLAIN and SCRAM-SHA-256/512.

`SaslSession` belongs to one connection: the handlers for SaslHandshake (17) and
SaslAuthenticate (36) drive it; the dispatcher asks it whether a request may run (before
authentication only ApiVersions, SaslHandshake and SaslAuthenticate, as Kafka) and the
connection reads `close_reason` after each answer (Kafka closes the connection after a failed
handshake or authentication) and `raw_mode` (after a v0 handshake, SASL tokens arrive as bare
length-prefixed frames, not Kafka requests).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nerve.security.scram import MECHANISMS as SCRAM_MECHANISMS
from nerve.security.scram import ScramError, ScramServer, password_matches

if TYPE_CHECKING:
    from nerve.security.credentials import CredentialStore

log = logging.getLogger("nerve.security")

SUPPORTED = ("PLAIN", *SCRAM_MECHANISMS)
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
_PRE_AUTH_APIS = frozenset((API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE))

_JAAS_OPTION = re.compile(r'\s*([A-Za-z0-9_.\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;]+))')


def parse_jaas(text: str) -> dict[str, str]:
    """The options of one JAAS login module line: `Module required k="v" k2=v2;`."""
    body = text.strip().rstrip(";").strip()
    head = re.match(r"\s*\S+\s+(required|requisite|sufficient|optional)\b", body)
    if head is None:
        raise ValueError(f"not a JAAS login module line: {text[:60]!r}")
    options = {}
    rest = body[head.end():]
    pos = 0
    while pos < len(rest):
        if rest[pos:].strip() == "":
            break
        m = _JAAS_OPTION.match(rest, pos)
        if m is None:
            raise ValueError(f"cannot parse JAAS options near {rest[pos:pos + 30]!r}")
        value = m.group(2) if m.group(2) is not None else m.group(3)
        options[m.group(1)] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return options


class AuthenticationFailed(Exception):
    """Credentials did not check out (the client gets SASL_AUTHENTICATION_FAILED)."""


class PlainServer:
    """SASL/PLAIN (RFC 4616): one message `authzid NUL authcid NUL password`."""

    def __init__(self, security: ListenerSecurity) -> None:
        self._security = security
        self.username: str | None = None
        self.complete = False

    def step(self, token: bytes) -> bytes:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise AuthenticationFailed("invalid SASL/PLAIN message")
        try:
            authzid, user, password = (p.decode() for p in parts)
        except UnicodeDecodeError:
            raise AuthenticationFailed("SASL/PLAIN message is not UTF-8") from None
        if not user or not password:
            raise AuthenticationFailed("SASL/PLAIN needs a user name and a password")
        if authzid and authzid != user:
            raise AuthenticationFailed("an authorization id different from the user name")
        if not self._security.plain_password_ok(user, password):
            raise AuthenticationFailed(f"invalid credentials for user {user!r}")
        self.username = user
        self.complete = True
        return b""


@dataclass
class ListenerSecurity:
    """What one listener asks of its clients; shared by that listener's connections."""

    name: str
    protocol: str  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    mechanisms: tuple[str, ...] = ()
    reauth_ms: int = 0
    plain_users: dict[str, str] = field(default_factory=dict)  # JAAS user_<name>="password"
    credentials: CredentialStore | None = None
    principal_mapper: object = None  # tls.PrincipalMapper, for SSL client certificates
    ssl_context: object = None  # ssl.SSLContext, replaced on reload

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def plain_password_ok(self, user: str, password: str) -> bool:
        expected = self.plain_users.get(user)
        if expected is not None:
            import hmac

            return hmac.compare_digest(expected.encode(), password.encode())
        store = self.credentials
        if store is None:
            return False
        return any(password_matches(mech, cred, password)
                   for mech, cred in store.of_user(user).items())

    def new_session(self, tls_principal: str | None = None) -> SaslSession:
        return SaslSession(self, tls_principal)


class SaslSession:
    def __init__(self, security: ListenerSecurity, tls_principal: str | None) -> None:
        self.security = security
        # SSL: the certificate's principal (or ANONYMOUS without one); SASL: set on success.
        self.principal = tls_principal or "User:ANONYMOUS"
        self.authenticated = not security.sasl
        self.mechanism: str | None = None
        self._exchange: PlainServer | ScramServer | None = None
        self.expires_at_ms: int | None = None
        self.raw_mode = False  # after a v0 SaslHandshake: bare tokens until authenticated
        self.close_reason: str | None = None  # the connection closes after this answer

    @property
    def listener_name(self) -> str:
        return self.security.name

    @property
    def security_protocol(self) -> str:
        return self.security.protocol

    def refusal(self, api_key: int) -> str | None:
        """Why the connection must be closed instead of running this request, or None."""
        if (self.authenticated and self.expires_at_ms is None) or api_key in _PRE_AUTH_APIS:
            return None
        if not self.authenticated:
            return f"request (key {api_key}) before SASL authentication"
        if self.expires_at_ms is not None and time.time() * 1000 > self.expires_at_ms:
            return "SASL session expired (connections.max.reauth.ms) without re-authentication"
        return None

    # ---- SaslHandshake
    def handshake(self, mechanism: str, version: int) -> tuple[bool, tuple[str, ...]]:
        """(accepted, enabled mechanisms). A refused mechanism closes the connection."""
        enabled = self.security.mechanisms
        if self._exchange is not None:
            self.close_reason = "SaslHandshake during a SASL exchange"
            return False, enabled
        if mechanism not in enabled or mechanism not in SUPPORTED:
            self.close_reason = f"unsupported SASL mechanism {mechanism!r}"
            return False, enabled
        if self.authenticated and self.mechanism not in (None, mechanism):
            self.close_reason = "re-authentication must use the same SASL mechanism"
            return False, enabled
        if self.authenticated and version == 0:
            self.close_reason = "re-authentication needs SaslHandshake v1"
            return False, enabled
        self.mechanism = mechanism
        self._exchange = (PlainServer(self.security) if mechanism == "PLAIN"
                          else ScramServer(mechanism, self._scram_lookup))
        self.raw_mode = version == 0
        return True, enabled

    def _scram_lookup(self, user: str, mechanism: str) -> object:
        store = self.security.credentials
        return None if store is None else store.get(user, mechanism)

    # ---- SaslAuthenticate (or a raw token)
    def authenticate(self, token: bytes) -> tuple[bytes, int, bool]:
        """(server token, session lifetime ms, exchange complete); AuthenticationFailed on
        failure (the connection is then closed after the error answer)."""
        exchange = self._exchange
        if exchange is None:
            self.close_reason = "SaslAuthenticate without a SaslHandshake"
            raise AuthenticationFailed("SaslAuthenticate before SaslHandshake")
        try:
            answer = exchange.step(token)
        except (ScramError, AuthenticationFailed) as e:
            self._exchange = None
            self.raw_mode = False
            self.close_reason = f"SASL/{self.mechanism} authentication failed: {e}"
            raise AuthenticationFailed(str(e)) from None
        if not exchange.complete:
            return answer, 0, False
        principal = f"User:{exchange.username}"
        self._exchange = None
        self.raw_mode = False
        if self.authenticated and self.security.sasl and principal != self.principal:
            self.close_reason = "re-authentication as a different principal"
            raise AuthenticationFailed("cannot change principals during re-authentication")
        self.principal = principal
        self.authenticated = True
        lifetime = self.security.reauth_ms
        self.expires_at_ms = int(time.time() * 1000) + lifetime if lifetime > 0 else None
        return answer, lifetime, True

"""The console's front door: Host check, HTTP basic auth, Origin/Referer check, CSRF token.

A pure ASGI middleware (SSE streams pass through untouched). In order, for every request:
1. Host must be one the console serves (DNS rebinding: a page on evil.example whose name now
   points at 127.0.0.1 sends `Host: evil.example`): 421 otherwise.
2. With a password, HTTP basic auth (any user name), compared in constant time: 401 otherwise.
3. A state-changing request (anything but GET/HEAD/OPTIONS) needs an Origin, or failing that a
   Referer, naming this console's own address (`null` and none at all are refused), and the
   per-session CSRF token (`csrf` form field or `X-CSRF-Token` header): 403 otherwise.
The session is a random cookie (HttpOnly, SameSite=Strict) set on first visit; its token is an
HMAC of it under a per-process key, so pages render it and forms post it back.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlparse

SESSION_COOKIE = "nerve_console_session"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The token of the request being served, read by the page templates (nerve/console/pages.py).
current_token: contextvars.ContextVar[str] = contextvars.ContextVar("csrf_token", default="")

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> set[str]:
    """Host names (no port) the console answers to: its bind address, the loopback names when
    it listens on loopback or everywhere, this machine's names when it listens everywhere, and
    the names an operator configured (--console-allowed-hosts)."""
    hosts = {h.strip().lower().strip("[]") for h in extra if h.strip()}
    if bind in ("", "0.0.0.0", "::"):
        hosts |= {"localhost", "127.0.0.1", "::1"}
        for name in (socket.gethostname(), socket.getfqdn()):
            hosts.add(name.lower())
            with contextlib.suppress(OSError):
                hosts |= {str(ai[4][0]) for ai in socket.getaddrinfo(name, None)}
    else:
        hosts.add(bind.lower().strip("[]"))
        if is_loopback(bind):
            hosts |= {"localhost", "127.0.0.1", "::1"}
    return hosts


def refusal(host: str, read_only: bool, password: str | None) -> str | None:
    """Why a console on `host` must not start: writable on a non-loopback address without a
    password (anyone who reaches it could delete topics). Read-only may: it shows what the
    Kafka port already serves to anyone (a warning is logged)."""
    if is_loopback(host) or password or read_only:
        return None
    return (f"the web console on {host} (not loopback) needs --console-password "
            "(or NERVE_CONSOLE_PASSWORD), or --console-read-only, or --console-host 127.0.0.1")


def _hostname(netloc: str) -> str:
    return (urlparse(f"//{netloc}").hostname or "").lower()


class Guard:
    def __init__(self, app: ASGIApp, hosts: set[str], password: str | None = None) -> None:
        self.app = app
        self.hosts = hosts
        self.password = password.encode() if password else None
        self.key = secrets.token_bytes(32)

    def token(self, session: str) -> str:
        return hmac.new(self.key, session.encode(), hashlib.sha256).hexdigest()

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        host = headers.get("host", "")
        if _hostname(host) not in self.hosts:
            await _plain(send, 421, "unknown Host: this console does not serve that name\n")
            return
        if self.password is not None and not self._authorized(headers.get("authorization")):
            await _plain(send, 401, "password required\n",
                         [(b"www-authenticate", b'Basic realm="nerve console", charset="UTF-8"')])
            return
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no session
            cookie = SimpleCookie()
        session = cookie[SESSION_COOKIE].value if SESSION_COOKIE in cookie else ""
        new_session = ""
        if len(session) < 32:
            session = new_session = secrets.token_urlsafe(32)
        token = self.token(session)
        if scope["method"] not in SAFE_METHODS:
            why = self._origin_refusal(headers, host)
            body = b""
            if why is None:
                body = await _read_body(receive)
                sent = headers.get("x-csrf-token") or _field(body, headers, CSRF_FIELD)
                if new_session or not hmac.compare_digest(sent.encode(), token.encode()):
                    why = "missing or wrong CSRF token (reload the page)"
            if why is not None:
                await _plain(send, 403, f"refused: {why}\n")
                return
            receive = _replay(body, receive)

        async def send_with_cookie(message: Any) -> None:
            if new_session and message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (
                    b"set-cookie", f"{SESSION_COOKIE}={new_session}; Path=/; HttpOnly; "
                                   f"SameSite=Strict".encode())]
            await send(message)

        reset = current_token.set(token)
        try:
            await self.app(scope, receive, send_with_cookie)
        finally:
            current_token.reset(reset)

    def _authorized(self, header: str | None) -> bool:
        assert self.password is not None
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _user, _, given = base64.b64decode(value.strip(), validate=True).partition(b":")
        except ValueError:
            return False
        return hmac.compare_digest(given, self.password)

    @staticmethod
    def _origin_refusal(headers: dict[str, str], host: str) -> str | None:
        origin = headers.get("origin")
        if origin is not None:
            if origin == "null" or urlparse(origin).netloc.lower() != host.lower():
                return f"cross-origin request (Origin {origin})"
            return None
        referer = headers.get("referer")
        if referer is None:
            return "no Origin or Referer on a state-changing request"
        if urlparse(referer).netloc.lower() != host.lower():
            return "cross-origin request (Referer)"
        return None


def _field(body: bytes, headers: dict[str, str], name: str) -> str:
    if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return ""
    values = parse_qs(body.decode("utf-8", errors="replace")).get(name)
    return values[-1] if values else ""


async def _read_body(receive: Callable[[], Awaitable[Any]]) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """The body once more for the app, then the real channel (its disconnect)."""
    done = False

    async def replay() -> Any:
        nonlocal done
        if done:
            return await receive()
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay

    return receive


async def _plain(send: Callable[[Any], Awaitable[None]], status: int, text: str,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})

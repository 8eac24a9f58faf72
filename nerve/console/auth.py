# ruff: noqa: E501  (the login form reads better unwrapped)
"""The console's login, for a cluster that requires SASL: each person logs in with their own
Kafka user and the console acts as that principal on the Kafka protocol.

- The login form (GET/POST /login, behind guard.Guard's Host/Origin/CSRF checks like every
  form) checks the user name and password with one SaslHandshake + SaslAuthenticate
  (nerve/tools/wire.py): a wrong password is one refused connection and an error on the form,
  nothing else is kept or retried.
- A successful login gets its own Kafka clients (a `Cluster` whose librdkafka config holds the
  user's credentials: the only place the password stays, since librdkafka needs it to
  reconnect and re-authenticate) and a random session token in an HttpOnly, SameSite=Strict
  cookie. Tokens are kept as their SHA-256 only. A session ends at logout, after
  `idle_timeout_s` without a request, or `max_age_s` after the login.
- `LoginGate` (ASGI) admits a request only with a live session (else the login page, or 401
  for scripts and streams) and sets `session.current_login` for it; `SessionCluster` is the
  `Cluster` the app is given: each call goes to the current login's own Cluster.
- Users in `read_only_users` get the read-only role: no write forms, every write POST 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from nerve.console import pages, session
from nerve.console.session import Login
from nerve.tools.base import ToolError, Unreachable

log = logging.getLogger("nerve.console")

LOGIN_COOKIE = "nerve_console_login"
MAX_LOGINS = 256  # sessions kept at once; the oldest goes first beyond it
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
# Settings that carry someone's credentials: never part of the shared base config.
_CREDENTIALS = ("sasl.username", "sasl.password", "sasl.jaas.config")

Scope = dict[str, Any]


def needs_login(client_config: dict[str, str]) -> bool:
    return client_config.get("security.protocol", "PLAINTEXT").upper().startswith("SASL_")


def parse_users(value: str | Iterable[str]) -> frozenset[str]:
    """`alice,User:bob` -> {"alice", "bob"}: user names or Kafka principals."""
    items = value.split(",") if isinstance(value, str) else value
    out = set()
    for item in (i.strip() for i in items):
        if item:
            out.add(item[5:] if item.startswith("User:") else item)
    return frozenset(out)


@dataclass
class LoginSettings:
    bootstrap: str
    # librdkafka settings every login shares (security.protocol, ssl.*): no credentials.
    base_config: dict[str, str]
    mechanisms: tuple[str, ...] = ("SCRAM-SHA-512",)
    read_only_users: frozenset[str] = frozenset()
    idle_timeout_s: float = 1800.0
    max_age_s: float = 12 * 3600.0
    timeout: float = 5.0
    client_id: str = "nerve-console"
    # Made by the caller: (bootstrap, timeout, client_id, config) -> a Cluster.
    make_cluster: Callable[..., Any] | None = field(default=None, repr=False)

    @classmethod
    def from_client_config(cls, bootstrap: str, client_config: dict[str, str],
                           mechanisms: Iterable[str] = (), **kw: Any) -> LoginSettings:
        base = {k: v for k, v in client_config.items() if k not in _CREDENTIALS}
        wanted = [m.strip().upper() for m in mechanisms if m.strip()]
        if not wanted:
            wanted = [base.pop("sasl.mechanism", "SCRAM-SHA-512").upper()]
        base.pop("sasl.mechanism", None)
        unknown = [m for m in wanted if m not in SASL_MECHANISMS]
        if unknown:
            raise ToolError(f"the console logs in with {', '.join(SASL_MECHANISMS)}, not "
                            f"{', '.join(unknown)}")
        return cls(bootstrap, base, tuple(wanted), **kw)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Logins:
    """The live console sessions, by the SHA-256 of their token."""

    def __init__(self, settings: LoginSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._by_digest: dict[str, Login] = {}
        self._lock = threading.Lock()

    def authenticate(self, user: str, password: str, mechanism: str) -> Login:
        """Blocking: check the credentials on one connection, then make the login's clients.
        AuthenticationError (a ToolError) when the broker refuses them."""
        from nerve.tools.wire import KafkaWire

        s = self.settings
        if mechanism not in s.mechanisms:
            raise ToolError(f"this console logs in with {', '.join(s.mechanisms)}")
        conf = {**s.base_config, "sasl.mechanism": mechanism, "sasl.username": user,
                "sasl.password": password}
        with KafkaWire(s.bootstrap, conf, timeout=s.timeout, client_id=s.client_id):
            pass  # authenticated: the credentials are right
        make = s.make_cluster
        if make is None:
            from nerve.tools.kafka import Cluster as make
        cluster = make(s.bootstrap, s.timeout, s.client_id, conf)
        now = self.clock()
        return Login(user=user, mechanism=mechanism, read_only=user in s.read_only_users,
                     cluster=cluster, created=now, last_used=now)

    def add(self, login: Login) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._by_digest[_digest(token)] = login
            if len(self._by_digest) > MAX_LOGINS:
                oldest = min(self._by_digest, key=lambda d: self._by_digest[d].last_used)
                self._end(self._by_digest.pop(oldest))
        log.info("console: %s logged in (SASL/%s)%s", login.principal, login.mechanism,
                 " with the read-only role" if login.read_only else "")
        return token

    def get(self, token: str) -> Login | None:
        now = self.clock()
        s = self.settings
        with self._lock:
            for digest, login in list(self._by_digest.items()):  # expired ones go now
                if (now - login.last_used > s.idle_timeout_s
                        or now - login.created > s.max_age_s):
                    del self._by_digest[digest]
                    log.info("console: session of %s expired", login.principal)
                    self._end(login)
            login = self._by_digest.get(_digest(token)) if token else None
            if login is not None:
                login.last_used = now
            return login

    def remove(self, token: str) -> Login | None:
        with self._lock:
            login = self._by_digest.pop(_digest(token), None)
        if login is not None:
            log.info("console: %s logged out", login.principal)
            self._end(login)
        return login

    def close(self) -> None:
        with self._lock:
            logins, self._by_digest = list(self._by_digest.values()), {}
        for login in logins:
            login.closed = True
            with contextlib.suppress(Exception):
                login.cluster.close()

    @staticmethod
    def _end(login: Login) -> None:
        # Closing flushes the login's producer: off the caller's thread (maybe the loop's).
        login.closed = True
        threading.Thread(target=login.cluster.close, name="nerve-console-logout",
                         daemon=True).start()

    def __len__(self) -> int:
        return len(self._by_digest)


class SessionCluster:
    """What the console app calls `cluster`: every attribute is the current login's Cluster's
    (session.current_login, carried into worker threads by asyncio.to_thread)."""

    def __init__(self, logins: Logins) -> None:
        self.logins = logins
        self.bootstrap = logins.settings.bootstrap
        self.timeout = logins.settings.timeout

    def _current(self) -> Any:
        login = session.login()
        if login is None or login.closed:
            raise ToolError("not logged in (or the session ended): log in again")
        return login.cluster

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current(), name)

    def close(self) -> None:
        self.logins.close()


def _cookie(scope: Scope, name: str) -> str:
    cookie = SimpleCookie()
    for k, v in scope["headers"]:
        if k == b"cookie":
            with contextlib.suppress(Exception):
                cookie.load(v.decode("latin-1"))
    return cookie[name].value if name in cookie else ""


_OPEN_PATHS = ("/login", "/static/")
# Pages a browser navigates to: without a session they redirect to the login form; anything
# else (JSON, SSE, /metrics, form posts) gets 401.
_STREAMS = ("/api/", "/events/", "/metrics")


class LoginGate:
    """ASGI middleware, inside guard.Guard: a live session for everything but the login page
    and the static files, and session.current_login set while the request is served."""

    def __init__(self, app: Callable[..., Awaitable[None]], logins: Logins) -> None:
        self.app = app
        self.logins = logins

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        login = self.logins.get(_cookie(scope, LOGIN_COOKIE))
        if login is None and not path.startswith(_OPEN_PATHS):
            if scope["method"] in ("GET", "HEAD") and not path.startswith(_STREAMS):
                target = path + (f"?{scope['query_string'].decode('latin-1')}"
                                 if scope.get("query_string") else "")
                response: Response = RedirectResponse(
                    f"/login?next={quote(target, safe='')}", status_code=303)
            else:
                response = Response("log in first: /login\n", status_code=401,
                                    media_type="text/plain")
            await response(scope, receive, send)
            return
        reset = session.current_login.set(login)
        try:
            await self.app(scope, receive, send)
        finally:
            session.current_login.reset(reset)


def _safe_next(target: str) -> str:
    # Only a path on this console (no //host or scheme: no open redirect).
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return "/" if target.startswith(("/login", "/logout")) else target


def _login_page(ctx: pages.Ctx, settings: LoginSettings, next_path: str, user: str = "",
                error: str | None = None) -> str:
    mechs = "".join(f'<option value="{pages.h(m)}">{pages.h(m)}</option>'
                    for m in settings.mechanisms)
    mech = (f'<label>Mechanism <select name="mechanism">{mechs}</select></label>'
            if len(settings.mechanisms) > 1 else
            f'<input type="hidden" name="mechanism" value="{pages.h(settings.mechanisms[0])}">')
    err = f'<p class="error" role="alert">{pages.h(error)}</p>' if error else ""
    body = f"""<h1>Log in</h1>
<p>This cluster requires SASL: log in with your Kafka user. The console then acts as
<code>User:&lt;you&gt;</code>, so you see what the cluster's ACLs allow you.</p>{err}
<form method="post" action="/login" class="login">
<input type="hidden" name="next" value="{pages.h(next_path)}">
<label>User <input name="username" value="{pages.h(user)}" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
{mech}<button type="submit">Log in</button></form>"""
    return pages.layout(ctx, "Log in", body)


def routes(logins: Logins, ctx: pages.Ctx) -> list[Route]:
    settings = logins.settings

    async def login_form(request: Request) -> Response:
        if session.login() is not None:
            return RedirectResponse(_safe_next(request.query_params.get("next", "/")), 303)
        return HTMLResponse(_login_page(ctx, settings,
                                        _safe_next(request.query_params.get("next", "/"))))

    async def login_post(request: Request) -> Response:
        body = (await request.body()).decode("utf-8", errors="replace")
        f = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
        user, password = f.get("username", "").strip(), f.get("password", "")
        mechanism = f.get("mechanism") or settings.mechanisms[0]
        next_path = _safe_next(f.get("next", "/"))
        del body, f  # the password lives on only in the login's client config
        if not user or not password:
            return HTMLResponse(_login_page(ctx, settings, next_path, user,
                                            "give a user name and a password"), 400)
        try:
            login = await asyncio.to_thread(logins.authenticate, user, password, mechanism)
        except ToolError as e:
            log.info("console: login as User:%s failed: %s", user, e)
            return HTMLResponse(_login_page(ctx, settings, next_path, user,
                                            f"login failed: {e}"),
                                502 if isinstance(e, Unreachable) else 401)
        token = logins.add(login)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(LOGIN_COOKIE, token, max_age=int(settings.max_age_s), path="/",
                            httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def logout(request: Request) -> Response:
        logins.remove(request.cookies.get(LOGIN_COOKIE, ""))
        response = RedirectResponse("/login?msg=logged+out", status_code=303)
        response.delete_cookie(LOGIN_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return [Route("/login", login_form), Route("/login", login_post, methods=["POST"]),
            Route("/logout", logout, methods=["POST"])]

"""Who the request being served is logged in as (nerve/console/auth.py sets it; the pages, the
write guard and the per-login Kafka clients read it)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Login:
    """One logged-in console session: its user, role and its own Kafka clients (a Cluster
    authenticating with the user's credentials, which only that Cluster's config holds)."""

    user: str
    mechanism: str
    read_only: bool
    cluster: Any = field(repr=False)
    created: float = 0.0
    last_used: float = 0.0
    closed: bool = False
    # Per-login state of app parts that must not be shared between users (the overview's
    # sampler): created on first use, dropped with the login.
    parts: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def principal(self) -> str:
        return f"User:{self.user}"


current_login: contextvars.ContextVar[Login | None] = contextvars.ContextVar(
    "console_login", default=None)


def login() -> Login | None:
    return current_login.get()


def read_only_role() -> bool:
    """The logged-in user has the read-only role (--console-read-only-users)."""
    current = current_login.get()
    return current is not None and current.read_only

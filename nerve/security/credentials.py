"""SCRAM credentials, durable in `<data dir>/scram-credentials.json`.

What Kafka keeps per (user, mechanism): salt, iterations, stored key, server key; never the
password. Every change is written to a temporary file, fsynced, renamed over the old one and
the directory fsynced, so a crash leaves the old set or the new one.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

from nerve.security.scram import ScramCredential

log = logging.getLogger("nerve.security")

FILE_NAME = "scram-credentials.json"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


class CredentialStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._users: dict[str, dict[str, ScramCredential]] = {}

    def load(self) -> CredentialStore:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return self
        for user, mechs in raw.get("users", {}).items():
            self._users[user] = {
                mech: ScramCredential(base64.b64decode(c["salt"]), int(c["iterations"]),
                                      base64.b64decode(c["stored_key"]),
                                      base64.b64decode(c["server_key"]))
                for mech, c in mechs.items()
            }
        return self

    def get(self, user: str, mechanism: str) -> ScramCredential | None:
        return self._users.get(user, {}).get(mechanism)

    def of_user(self, user: str) -> dict[str, ScramCredential]:
        return dict(self._users.get(user, {}))

    def users(self) -> list[str]:
        return sorted(self._users)

    def upsert(self, user: str, mechanism: str, cred: ScramCredential) -> None:
        self._users.setdefault(user, {})[mechanism] = cred

    def delete(self, user: str, mechanism: str) -> bool:
        mechs = self._users.get(user)
        if not mechs or mechanism not in mechs:
            return False
        del mechs[mechanism]
        if not mechs:
            del self._users[user]
        return True

    def snapshot(self) -> dict[str, Any]:
        return {"version": 1, "users": {
            user: {mech: {"salt": _b64(c.salt), "iterations": c.iterations,
                          "stored_key": _b64(c.stored_key), "server_key": _b64(c.server_key)}
                   for mech, c in mechs.items()}
            for user, mechs in self._users.items()}}

    def save(self, snapshot: dict[str, Any] | None = None) -> None:
        """Write `snapshot` (default: now) durably; blocking (call it from a thread)."""
        data = json.dumps(snapshot if snapshot is not None else self.snapshot(), indent=1)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

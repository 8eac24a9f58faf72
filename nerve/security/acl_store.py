"""Durable ACLs: `<data dir>/acls.json`, rewritten atomically (tmp, fsync, rename, fsync dir).

ACLs are few and change rarely; each CreateAcls/DeleteAcls rewrites the whole file before it
is answered, so an acknowledged change survives kill -9 and a torn write leaves the old file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("nerve.acl")

FILE_NAME = "acls.json"


class AclStoreError(Exception):
    """acls.json cannot be read: `nerve serve` exits with this one line."""


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class AclStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME

    def load(self) -> list[dict[str, Any]]:
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            # Starting with no ACLs would open everything up: refuse to start instead.
            raise AclStoreError(f"cannot read {self.path}: {e}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("acls", []), list):
            raise AclStoreError(f"cannot read {self.path}: not an ACL file")
        return list(raw.get("acls", []))

    def save(self, acls: list[dict[str, Any]]) -> None:
        body = {"version": 1, "acls": acls}
        write_atomic(self.path, json.dumps(body, indent=1).encode())

"""Bearer tokens with roles, stored hashed.

Tokens are 32 random bytes, so a plain SHA-256 is enough to store them (no password stretching
is needed for secrets with this much entropy). The file is re-read when it changes, so a token
created by `joblet-agent token create` works at once in a running agent.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import Forbidden, Unauthorized

Role = Literal["user", "admin"]
ROLES: tuple[str, ...] = ("user", "admin")
TOKEN_PREFIX = "jnb_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id (the owner of their jobs), its name and role."""

    id: str
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("this call needs an admin token (set JOBLET_ADMIN_TOKEN)")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._entries: list[dict[str, str]] = []

    def create(self, role: str, name: str | None = None) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        entry = {"id": secrets.token_hex(4), "name": name or role, "role": role,
                 "sha256": _digest(token), "created_at": str(int(time.time()))}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            entries.append(entry)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"tokens": entries}, f, indent=1)
            os.replace(tmp, self.path)
        return token

    def _read(self) -> list[dict[str, str]]:
        try:
            with open(self.path) as f:
                return list(json.load(f).get("tokens", []))
        except FileNotFoundError:
            return []

    def _current(self) -> list[dict[str, str]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            self._entries, self._stamp = self._read(), stamp
        return self._entries

    def authenticate(self, header: str | None) -> Principal:
        """Check `Authorization: Bearer <token>`, comparing digests in constant time."""
        if not header or not header.startswith("Bearer "):
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>' "
                               "(create one with 'joblet-agent token create')")
        digest = _digest(header[len("Bearer "):].strip())
        found = None
        for entry in self._current():
            if hmac.compare_digest(entry["sha256"], digest):
                found = entry
        if found is None:
            raise Unauthorized("unknown token: create one with 'joblet-agent token create'")
        return Principal(found["id"], found["name"], found["role"])

    def count(self) -> int:
        return len(self._current())

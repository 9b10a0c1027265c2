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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .policy import Policy

from .errors import Forbidden, Unauthorized

Role = Literal["user", "admin"]
ROLES: tuple[str, ...] = ("user", "admin")
TOKEN_PREFIX = "jnb_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id (the owner of their jobs), its name and role; for a hub user
    also their groups and the limits and quotas the config gives them (`policy`)."""

    id: str
    name: str
    role: str
    identity: str = "token"  # "token" (a local agent token) or "jupyterhub"
    groups: tuple[str, ...] = ()
    policy: Policy | None = field(default=None, compare=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def require_admin(self) -> None:
        if self.is_admin:
            return
        if self.identity == "jupyterhub":
            raise Forbidden(f"this call needs the admin role, and JupyterHub user {self.name} does not have "
                            "it: hub admins and members of the agent's admin_group do")
        raise Forbidden("this call needs an admin token (set JOBLET_ADMIN_TOKEN)")


OWNER_ID_BYTES = 16  # an owner id names whose jobs are whose: guessing one must be hopeless


def new_owner_id() -> str:
    return secrets.token_hex(OWNER_ID_BYTES)


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            taken = {e["id"] for e in entries}
            owner = new_owner_id()
            while owner in taken:  # 128 random bits: never in practice, and then never twice
                owner = new_owner_id()
            entries.append({"id": owner, "name": name or role, "role": role, "sha256": _digest(token),
                            "created_at": str(int(time.time()))})
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
        """Check `Authorization: Bearer <token>` against the local tokens only."""
        found = self.lookup(bearer(header))
        if found is None:
            raise Unauthorized("unknown token: create one with 'joblet-agent token create'")
        return found

    def lookup(self, token: str) -> Principal | None:
        """The local token's principal, comparing digests in constant time; None if unknown."""
        digest = _digest(token)
        found = None
        for entry in self._current():
            if hmac.compare_digest(entry["sha256"], digest):
                found = entry
        return None if found is None else Principal(found["id"], found["name"], found["role"])

    def count(self) -> int:
        return len(self._current())


def bearer(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header."""
    if not header or not header.startswith("Bearer "):
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>' "
                           "(create one with 'joblet-agent token create')")
    return header[len("Bearer "):].strip()


class Authenticator:
    """Local agent tokens first; then, where the config names a JupyterHub, the hub's word
    (`hub` turns a token into a Principal or raises). Agent tokens never go to the hub."""

    def __init__(self, tokens: TokenStore, hub: Callable[[str], Principal] | None = None) -> None:
        self.tokens = tokens
        self.hub = hub

    def local(self, header: str | None) -> Principal | None:
        """The caller by the local tokens alone (no I/O beyond a stat of the token file); None
        for a token only the hub can judge. An unknown token without a hub is refused here."""
        token = bearer(header)
        found = self.tokens.lookup(token)
        if found is None and (self.hub is None or token.startswith(TOKEN_PREFIX) or not token):
            raise Unauthorized("unknown token: create one with 'joblet-agent token create'"
                               + ("" if self.hub is None else ", or send a JupyterHub token"))
        return found

    def remote(self, header: str | None) -> Principal:
        """The hub's word on a token that is not a local one (a call that may block on the hub)."""
        assert self.hub is not None
        return self.hub(bearer(header))

"""Per-user quotas of hub users (jobs at once, sessions at once, kept bytes), counted from the
job store, and the account `GET /v1/whoami` shows: who, effective limits, quotas and use.

Local agent tokens have no policy: nothing here limits them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..auth import Principal
from ..config import AgentConfig
from ..hubconfig import LIMIT_NAMES, QUOTA_NAMES
from .store import JobStore


class QuotaKeeper:
    def __init__(self, store: JobStore, config: AgentConfig) -> None:
        self.store = store
        self.config = config
        self._sizes: dict[str, int] = {}  # finished jobs never change: their size is measured once
        #: open sessions of an owner; the session service sets it when it exists
        self.sessions_open: Callable[[str], int] | None = None

    def admit_job(self, who: Principal) -> None:
        """Refuse (409) a new job of a hub user at their quota of jobs or of kept bytes."""
        if who.policy is None:
            return
        who.policy.check("jobs", self.running(who.id))
        who.policy.check("kept_mb", self.kept_bytes(who.id), asked=0)

    def admit_session(self, who: Principal) -> None:
        if who.policy is not None and self.sessions_open is not None:
            who.policy.check("sessions", self.sessions_open(who.id))

    def running(self, owner: str) -> int:
        return sum(1 for r in self.store.records.values() if r.owner == owner and not r.status.finished)

    def kept_bytes(self, owner: str) -> int:
        total = 0
        for record in list(self.store.records.values()):
            if record.owner == owner and record.status.finished:
                if record.id not in self._sizes:
                    self._sizes[record.id] = _tree_size(str(self.store.dir(record.id)))
                total += self._sizes[record.id]
        for gone in set(self._sizes) - set(self.store.records):
            del self._sizes[gone]
        return total

    def account(self, who: Principal) -> dict[str, Any]:
        """Identity, the limits a job of `who` gets and may ask for, and quotas with their use."""
        policy = who.policy
        top = {n: getattr(self.config.max_limits, n) for n in LIMIT_NAMES}
        defaults = {n: getattr(self.config.defaults, n) for n in LIMIT_NAMES}
        sources = {n: "agent max_limits" for n in LIMIT_NAMES}
        quotas: dict[str, Any] = {n: {"limit": None, "used": None} for n in QUOTA_NAMES}
        if policy is not None:
            defaults = policy.clamp({}, defaults)
            for name, cap in policy.caps.items():
                top[name], sources[name] = min(cap, top[name]), policy.caps_from[name]
            for name in QUOTA_NAMES:
                quotas[name] = {"limit": policy.quotas.get(name), "from": policy.quotas_from.get(name)}
        quotas["jobs"]["used"] = self.running(who.id)
        quotas["kept_mb"]["used"] = round(self.kept_bytes(who.id) / (1 << 20), 3)
        if self.sessions_open is not None:
            quotas["sessions"]["used"] = self.sessions_open(who.id)
        return {"id": who.id, "name": who.name, "role": who.role, "identity": who.identity,
                "groups": list(who.groups), "max_limits": top, "max_limits_from": sources,
                "default_limits": defaults, "quotas": quotas}


def _tree_size(path: str) -> int:
    """Bytes of the files under `path`, symlinks not followed (a job's folder is its own data)."""
    total = 0
    for folder, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                continue
    return total

"""Quotas, counted from the job store and the live sandboxes.

Every caller: jobs and sessions running at once (per user and for the whole agent), job records
kept, and the files and bytes of the /work copies kept (`quotas:` in the config); what a new job
may still keep of its /work is its user's quota left, less what the user's running jobs may keep.
Hub users also get their group's quotas (jobs, sessions, kept bytes), and `GET /v1/whoami` shows
the account: who, effective limits, quotas and use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..auth import Principal
from ..config import AgentConfig
from ..errors import TooMany
from ..models import KeptWork
from ..hubconfig import LIMIT_NAMES, QUOTA_NAMES
from .jobstore import JobStore


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

    def admit(self, owner: str, live: list[tuple[str, KeptWork | None]], stored: bool, disk_bytes: int) -> KeptWork:
        """Refuse (429) a new sandbox of `owner` beyond the agent's quotas; what its /work copy may
        keep: the user's quota left, less what the user's running jobs may keep (so the kept copies
        never add up beyond it), at most `quotas.work_files` and its own disk. `live`: (owner, what
        it may keep) of every sandbox running now."""
        q = self.config.quotas
        if len(live) >= q.live_jobs:
            raise TooMany(f"this agent runs {len(live)} jobs and sessions, its most (quotas.live_jobs); "
                          f"retry when some have ended")
        mine = [budget for who, budget in live if who == owner]
        if len(mine) >= q.live_jobs_per_user:
            raise TooMany(f"you have {len(mine)} jobs and sessions running, the most one user may "
                          f"(quotas.live_jobs_per_user); wait for one to end or stop one")
        if not stored:
            return KeptWork()
        jobs, files, size = self.store.kept_by(owner)
        if jobs >= q.kept_jobs_per_user:
            raise TooMany(f"you keep {jobs} jobs, the most one user may (quotas.kept_jobs_per_user): "
                          f"delete finished ones (DELETE /v1/jobs/{{id}}); finished jobs also go after "
                          f"{q.retention_days:g} days")
        if files >= q.kept_files_per_user or size >= q.kept_mb_per_user << 20:
            raise TooMany(f"your kept /work copies hold {files} files and folders, {size >> 20} MB: the "
                          f"most one user may keep (quotas.kept_files_per_user, quotas.kept_mb_per_user); "
                          f"delete finished jobs first")
        files += sum(b.files for b in mine if b is not None)
        size += sum(b.bytes for b in mine if b is not None)
        return KeptWork(files=max(0, min(q.work_files, q.kept_files_per_user - files)),
                        bytes=max(0, min(disk_bytes, (q.kept_mb_per_user << 20) - size)))

    def admit_session(self, who: Principal) -> None:
        if who.policy is not None and self.sessions_open is not None:
            who.policy.check("sessions", self.sessions_open(who.id))

    def running(self, owner: str) -> int:
        return sum(1 for r in self.store.records.values() if r.owner == owner and not r.status.finished)  # shelved ones are finished

    def kept_bytes(self, owner: str) -> int:
        total = 0
        every = self.store.summaries()
        for record in every:
            if record.owner == owner and record.finished:
                if record.id not in self._sizes:  # what the stage reported it kept, or a walk (older records)
                    self._sizes[record.id] = record.kept_bytes or _tree_size(str(self.store.dir(record.id)))
                total += self._sizes[record.id]
        for gone in set(self._sizes) - {r.id for r in every}:
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

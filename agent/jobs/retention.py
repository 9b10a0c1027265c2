"""Retention: finished jobs older than `quotas.retention_days` are removed by the agent, records,
logs and kept /work alike, as a DELETE would; the folder itself goes on a worker thread, because
a kept /work can hold tens of thousands of files."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..fdlimit import QUIET

if TYPE_CHECKING:
    from .service import JobService


def expired(service: JobService, now: float) -> list[str]:
    """The finished jobs past their retention, oldest first."""
    cutoff = now - service.config.quotas.retention_days * 86400
    old = [r for r in service.store.summaries()
           if r.finished and r.id not in service.live and (r.ended_at or r.created_at) < cutoff]
    return [r.id for r in sorted(old, key=lambda r: r.ended_at or r.created_at)]


async def prune(service: JobService) -> int:
    """Remove every expired job; how many went."""
    gone = 0
    for job_id in expired(service, time.time()):
        service.audit.write("expire", job=job_id, retention_days=service.config.quotas.retention_days)
        await service.remove_record(job_id)
        gone += 1
    return gone


async def keep_pruning(service: JobService) -> None:
    """At start and then every `quotas.retention_check_s`, until cancelled (agent shutdown)."""
    while True:
        try:
            await prune(service)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            QUIET.say("retention", f"removing expired jobs: {exc!r}")
        await asyncio.sleep(service.config.quotas.retention_check_s)

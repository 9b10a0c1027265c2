"""A job while its sandbox exists: where its output and end go, and what hears them needs of the service.

`LiveJob` is shared by the JobService, the executor's listener (ears.py), the sinks (a job's log
in sinks.py, a session) and restore.py; `Keeper` is the JobService as the ears and the job's log
see it, so they sit below the service instead of importing it back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..cluster.executor import Execution
from ..cluster.holder_link import LaunchNote
from ..config import AgentConfig
from ..models import JobRecord, KeptWork
from ..sandbox.outcome import Outcome
from ..sandbox.output import Step, Translator
from .jobstore import JobStore
from .store import EventLog
from .verdict import Verdict


class SandboxSink(Protocol):
    """Where a sandbox's events and end go: a job's log and record, or a session."""

    log: EventLog

    def bind(self, live: LiveJob) -> None:
        """The sandbox the sink hears from (its outcome so far, its usage)."""

    def running(self) -> None:
        """The program started."""

    def note(self, text: str) -> None:
        """A line of the agent's own about the sandbox (its program could not start, ...)."""

    def notice(self, data: Any) -> None:
        """What the output translator tells (a session's runner is ready, a cell ended)."""

    def ended(self, verdict: Verdict) -> None:
        """The sandbox is gone, everything it held released; how it ended."""


@dataclass
class LiveJob:
    """What the service keeps about a job while its sandbox exists."""

    record: JobRecord
    note: LaunchNote                    # its uid slot, its holder's token, what its end adds to its log
    stop_reason: str | None = None
    outcome: Outcome = field(default_factory=Outcome)
    translator: Translator | None = None  # the agent's, where no holder translates (a Slurm job)
    hold_exit: bool = False             # a runtime build: the RuntimeService ends the record
    verdict: Verdict | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    sink: SandboxSink | None = None     # where output and the end go: the job's log, or a session
    execution: Execution | None = None  # the sandbox, on this host or on a cluster's node
    local: bool = True                  # this host's executor, whatever the agent's `executor` is
    budget: KeptWork | None = None      # what its /work copy may keep (its user's quota left)
    kept: KeptWork = field(default_factory=KeptWork)  # what the copy kept (stage 1's "done")

    @property
    def uid_slot(self) -> int:
        return self.note.uid_slot


class Cleanups:
    """The clean-ups still running after their jobs' ends (cgroups, links, root folders): a DELETE
    of the job and the agent's shutdown wait for them; nothing else does."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def add(self, job_id: str, task: asyncio.Task[None] | None) -> None:
        if task is None or task.done():
            return
        self.tasks[job_id] = task
        task.add_done_callback(lambda _t: self.tasks.pop(job_id, None) if self.tasks.get(job_id) is _t else None)

    async def wait(self, job_id: str) -> None:
        task = self.tasks.get(job_id)
        if task is not None:
            await asyncio.gather(asyncio.shield(task), return_exceptions=True)

    async def wait_all(self, timeout: float) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=timeout)


class Keeper(Protocol):
    """The JobService, as a live job's ears and its log see it."""

    config: AgentConfig
    store: JobStore
    live: dict[str, LiveJob]
    cleanups: Cleanups

    def take(self, live: LiveJob, step: Step) -> None:
        """Events and a notice from the agent's own output translator (a sandbox without a holder)."""

    def release_slot(self, live: LiveJob) -> None:
        """The job's uid slot is free again."""

    def signal_stop(self, live: LiveJob, reason: str, grace: float | None = None) -> None:
        """Stop the sandbox, for `reason` (stopped, timeout, ...)."""

    def finish_record(self, record: JobRecord, verdict: Verdict) -> None:
        """The job's record takes its verdict and is saved."""

"""A job while its sandbox exists: where its output and end go, and what hears them needs of the service.

`LiveJob` is shared by the JobService, the executor's listener (ears.py) and the sinks (a job's
log in sinks.py, a session); `Keeper` is the JobService as the ears and the job's log see it, so
they sit below the service instead of importing it back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from ..cluster.executor import Ending, Execution
from ..config import AgentConfig
from ..models import JobRecord, KeptWork
from ..sandbox import status
from ..sandbox.spec import Mount
from .store import JobStore
from .verdict import SandboxOutcome, Verdict


class SandboxSink(Protocol):
    def output(self, kind: str, data: bytes) -> None:
        """A chunk of the sandbox's stdout or stderr; b"" when that stream has ended."""

    def running(self) -> None:
        """The program started."""

    def note(self, text: str) -> None:
        """A line of the agent's own about the sandbox (its program could not start, ...)."""

    def ended(self, verdict: Verdict) -> None:
        """The sandbox is gone, everything it held released; how it ended."""


@dataclass
class LiveJob:
    """What the service keeps about a job while its sandbox exists."""

    record: JobRecord
    uid_slot: int
    stop_reason: str | None = None
    outputs: list[str] = field(default_factory=list)
    outcome: SandboxOutcome = field(default_factory=SandboxOutcome)
    cell: bool = False                  # a script: its runner may leave a last value and figures
    hold_exit: bool = False             # a runtime build: the RuntimeService ends the record
    verdict: Verdict | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    sink: SandboxSink | None = None     # where output and the end go: the job's log, or a session
    execution: Execution | None = None  # the sandbox, on this host or on a cluster's node
    extra_mounts: list[Mount] = field(default_factory=list)  # the agent's own binds (a session's runner)
    local: bool = True                  # this host's executor, whatever the agent's `executor` is
    budget: KeptWork | None = None      # what its /work copy may keep (its user's quota left)
    kept: KeptWork = field(default_factory=KeptWork)  # what the copy kept (stage 1's "done")


class Keeper(Protocol):
    """The JobService, as a live job's ears and its log see it."""

    config: AgentConfig
    store: JobStore

    def on_status(self, live: LiveJob, msg: status.Message) -> None: ...

    def on_ended(self, live: LiveJob, ending: Ending) -> None: ...

    def finish_record(self, record: JobRecord, verdict: Verdict) -> None: ...

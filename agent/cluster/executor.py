"""Where a job's sandbox runs, behind one small interface: the JobService hands an executor a
SandboxSpec and hears back what happened through `JobEvents`; the executor owns everything the
sandbox holds until `ended` (processes, cgroups, folders; on a cluster, the Slurm job), or until
the `cleanup` task that `ended` names has finished.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..sandbox import cgroups, status
from ..sandbox.spec import Mount


@dataclass
class Placement:
    """Where a cluster job runs; the job record shows it as `node` and `cluster`."""

    node: str
    engine: str
    job_id: str
    devices: list[str] = field(default_factory=list)


@dataclass
class Ending:
    """What the executor knows once the job has ended (what it held may still be going: `cleanup`).

    `stop` is a stop the executor's side applied on its own ("timeout" enforced on the node);
    `lost` says why a job ended without its result (its node failed, Slurm cancelled it);
    `setup` says why it never started (Slurm refused it). Usage and OOM come from the job's cgroup."""

    cpu_s: float | None = None
    memory_peak_bytes: int | None = None
    oom: bool = False
    stop: str | None = None
    lost: str | None = None
    setup: str | None = None
    cleanup: "asyncio.Task[None] | None" = None   # still removing what the sandbox held (a DELETE waits)


class JobEvents(Protocol):
    """The JobService's ears for one job."""

    def output(self, stream: str, data: bytes) -> None:
        """A chunk of the program's stdout or stderr (b"" when that stream has ended)."""

    def status(self, msg: status.Message) -> None:
        """What the sandbox reported: running, how it ended, a /work copy problem."""

    def queued(self, message: str) -> None:
        """Still waiting for a node: why (a cluster's scheduler's reason)."""

    def placed(self, placement: Placement) -> None:
        """A cluster put the job on a node."""

    def ended(self, ending: Ending) -> None:
        """Nothing of the sandbox is left anywhere; how it ended, as far as the executor knows."""

    def logged(self, seq: int) -> None:
        """The sandbox's holder wrote its log up to `seq` (an execution that `holds_log`)."""

    def notice(self, data: Any) -> None:
        """What the holder's output translator tells (a session's cell started or ended)."""


class Execution(Protocol):
    """One job's sandbox, wherever it runs."""

    holds_log: bool
    """Its holder writes the sandbox's log (through its output translator), enforces its timeout,
    and outlives the agent (`detach`); else the agent writes the log from `JobEvents.output`."""

    def stop(self, grace: float | None = None, reason: str = "stopped") -> None:
        """SIGTERM to the job, SIGKILL after `grace`; a job that has not started never starts."""

    async def detach(self) -> None:
        """The agent stops and leaves the sandbox running (one that `holds_log`; else nothing)."""

    def signal(self, sig: int) -> None:
        """A signal for the program (a session's interrupt)."""

    def write_input(self, data: bytes) -> None:
        """Bytes for the program's stdin (a session's requests); BrokenPipeError once it is closed."""

    def usage(self) -> cgroups.CgroupUsage | None:
        """CPU and peak memory so far, if this executor can see them while the job runs."""

    def kill(self) -> None:
        """The last resort at shutdown: kill whatever is left at once."""


class PublishedRuntime(Protocol):
    """What the agent resolved a job's runtime to (jobs.spec.RuntimeMounts)."""

    name: str
    mounts: list[Mount]
    version_dir: str | None
    manifest_sha256: str | None


@dataclass(frozen=True)
class RuntimeRef:
    """A published runtime as a node must find it: name, build (version folder), manifest digest,
    and its mounts relative to the version folder; never a path the node would follow."""

    name: str
    build: str
    manifest_sha256: str
    mounts: list[dict[str, str]]

    @classmethod
    def of(cls, runtime: PublishedRuntime) -> "RuntimeRef":
        if not runtime.version_dir or not runtime.manifest_sha256:
            raise ValueError(f"runtime {runtime.name!r} has no published build to name")
        return cls(runtime.name, os.path.basename(runtime.version_dir), runtime.manifest_sha256,
                   [{"source": os.path.relpath(os.path.join(m.beneath or "", m.source), runtime.version_dir),
                     "target": m.target} for m in runtime.mounts])  # a source `beneath` isolated/ is relative to it

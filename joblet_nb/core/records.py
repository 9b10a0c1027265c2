"""What the agent answers, as typed records (httpx's lesson: callers get objects, not dicts).

Each record reads the agent's JSON with `from_json`, keeping the fields API.md names as typed
attributes; fields an agent adds beyond those land in `extra`, so a newer agent never breaks an
older client. `to_json` gives the wire form back (for tables and for re-sending).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

# The API's vocabulary, one definition shared with the agent (standard library only).
from joblet_agent.contract import JobStatus, JobType

R = TypeVar("R")


def from_json(cls: type[R], data: dict[str, Any], **typed: Any) -> R:
    """`cls` from a JSON object: known fields by name (`typed` overrides them), the rest in `extra`."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    known = {k: v for k, v in data.items() if k in names and k != "extra"}
    known.update(typed)
    if "extra" in names:
        known["extra"] = {k: v for k, v in data.items() if k not in names}
    return cls(**known)


def to_json(record: Any) -> dict[str, Any]:
    """The wire form of a record: its fields (nested records too) and its `extra`, Nones left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.name == "extra":
            out.update(value)
        elif dataclasses.is_dataclass(value):
            out[f.name] = to_json(value)
        elif isinstance(value, Enum):
            out[f.name] = value.value
        elif value is not None:
            out[f.name] = value
    return out


@dataclass(frozen=True)
class JobLimits:
    """What bounds one job (API.md `limits`); a field left None takes the agent's default."""

    cpu_percent: int | None = None
    memory_mb: int | None = None
    pids: int | None = None
    io_bps: int | None = None
    timeout_s: float | None = None
    disk_mb: int | None = None
    gpus: int | None = None  # handed out by an agent with executor: slurm

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "JobLimits":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data or {}) - known)
        if unknown:
            raise ValueError(f"unknown limit {unknown[0]!r}; one of: {', '.join(sorted(known))}")
        return cls(**(data or {}))

    def over(self, base: "JobLimits") -> "JobLimits":
        """These limits where set, `base` for the rest (a cell's options over the notebook's)."""
        return dataclasses.replace(base, **{k: v for k, v in to_json(self).items()})


@dataclass(frozen=True)
class Usage:
    """CPU seconds and peak memory, sampled while the job runs and final once it ended."""

    cpu_s: float | None = None
    memory_peak_bytes: int | None = None


@dataclass(frozen=True)
class JobRecord:
    """A job as `GET /v1/jobs/{id}` describes it."""

    id: str
    status: JobStatus = JobStatus.PENDING
    type: JobType = JobType.STANDARD
    owner: str = ""
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    runtime: str | None = None
    limits: JobLimits = field(default_factory=JobLimits)
    network: str = "none"
    command: list[str] | None = None
    created_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    usage: Usage = field(default_factory=Usage)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. `node`, `cluster` of a cluster agent

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobRecord":
        return from_json(cls, data, status=JobStatus(data.get("status", "PENDING")),
                         type=JobType(data.get("type", "standard")),
                         limits=from_json(JobLimits, data.get("limits") or {}),
                         usage=from_json(Usage, data.get("usage") or {}))

    @property
    def finished(self) -> bool:
        return self.status.finished


@dataclass(frozen=True)
class Created:
    """The answer to a call that starts a job (`POST /v1/jobs`, a runtime build)."""

    id: str
    status: JobStatus
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Created":
        return from_json(cls, data, status=JobStatus(data["status"]))


@dataclass(frozen=True)
class Health:
    """`GET /v1/health`: the agent's version and platform."""

    status: str
    version: str = ""
    cgroup: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Identity:
    """Who the agent takes a token for (`GET /v1/whoami`): `identity` is "token" (an agent token)
    or "jupyterhub"; `extra` holds the effective limits and quotas an agent reports."""

    id: str
    name: str
    role: str
    identity: str = "token"
    groups: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeInfo:
    """A published runtime (`GET /v1/runtimes[/{name}]`); the full view adds its spec in `extra`."""

    name: str
    status: str = ""
    language: str | None = None
    version: str | None = None
    description: str | None = None
    files: int | None = None
    size_mb: float | None = None
    built: str | None = None
    problem: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeTest:
    """`POST /v1/runtimes/{name}/test`: the runtime's own test, run to its end in a sandbox."""

    name: str
    ok: bool
    job_id: str
    status: JobStatus
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RuntimeTest":
        return from_json(cls, data, status=JobStatus(data["status"]))

    def record(self) -> JobRecord:
        """The test job as a record (for `JobFailed`)."""
        return JobRecord(self.job_id, self.status, reason=self.reason, message=self.message,
                         exit_code=self.exit_code, runtime=self.name)


@dataclass(frozen=True)
class FileEntry:
    """One regular file a finished job left in /work."""

    path: str  # relative to /work
    size: int
    mode: int


@dataclass(frozen=True)
class FileListing:
    """`GET /v1/jobs/{id}/files`: the files a finished job left in /work, by path; `truncated`
    when the agent listed only the first of very many."""

    files: list[FileEntry]
    truncated: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FileListing":
        return cls([from_json(FileEntry, f) for f in data["files"]], bool(data.get("truncated")))

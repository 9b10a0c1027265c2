"""The API's data: request bodies (validated, unknown fields refused) and the job record."""

from __future__ import annotations

import base64
import binascii
import os
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .contract import IDENTIFIER, JobStatus, JobType, check_env, check_runtime_name
from .fs import UnsafePath, split_relative

MAX_UPLOAD_BYTES = 64 << 20


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobLimits(Strict):
    """What one job may use, as asked for in a request and kept in its record."""

    cpu_percent: int | None = Field(None, ge=1, le=100 * (os.cpu_count() or 1),
                                    description="100 = one CPU")
    memory_mb: int | None = Field(None, ge=8, le=1 << 20)
    pids: int | None = Field(None, ge=4, le=1 << 16)
    io_bps: int | None = Field(None, ge=0, le=1 << 40, description="0 = unlimited")
    timeout_s: float | None = Field(None, gt=0, le=7 * 86400)
    disk_mb: int | None = Field(None, ge=1, le=1 << 20, description="size of /work + /tmp")
    gpus: int | None = Field(None, ge=0, le=64, description="GPUs, handed out by Slurm (executor: slurm)")


class Upload(Strict):
    path: str = Field(..., max_length=4096)
    content_b64: str
    mode: int = Field(0o644, ge=0, le=0o777)

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        try:
            split_relative(value)
        except UnsafePath as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("content_b64")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("content_b64 is not valid base64") from None
        if len(raw) > MAX_UPLOAD_BYTES:
            raise ValueError(f"upload is {len(raw)} bytes; the limit is {MAX_UPLOAD_BYTES}")
        return value

    def content(self) -> bytes:
        return base64.b64decode(self.content_b64)


def _variable_names(names: Any) -> Any:
    """Names of a cell's inputs or outputs: Python variables (ASCII identifiers)."""
    for name in names:
        if not IDENTIFIER.match(name):
            raise ValueError(f"{name!r} is not a Python variable name")
    return names


RuntimeName = Annotated[str, AfterValidator(check_runtime_name)]
Environment = Annotated[dict[str, str], AfterValidator(lambda env: check_env(env, "env"))]
Inputs = Annotated[dict[str, Any], AfterValidator(_variable_names)]
OutputNames = Annotated[list[str], AfterValidator(_variable_names)]


class JobRequest(Strict):
    """POST /v1/jobs. Nothing here selects the job type: the service sets it."""

    command: list[str] | None = Field(None, min_length=1, max_length=4096)
    script: str | None = Field(None, max_length=16 << 20)
    runtime: RuntimeName | None = None
    env: Environment = Field(default_factory=dict)
    limits: JobLimits = Field(default_factory=JobLimits)
    network: Literal["none", "bridge"] = "none"
    uploads: list[Upload] = Field(default_factory=list, max_length=1024)
    inputs: Inputs = Field(default_factory=dict)
    outputs: OutputNames = Field(default_factory=list, max_length=256,
                               description="variables of a script job returned as JSON in an `outputs` event")

    @model_validator(mode="after")
    def _one_of(self) -> "JobRequest":
        if (self.command is None) == (self.script is None):
            raise ValueError("give exactly one of `command` or `script`")
        if self.command is not None and any("\x00" in a for a in self.command):
            raise ValueError("command arguments must not contain NUL bytes")
        if self.command is not None and not self.command[0]:
            raise ValueError("command[0] must name a program")
        if (self.inputs or self.outputs) and self.script is None:
            raise ValueError("`inputs` and `outputs` need a `script` job")
        return self



class Usage(BaseModel):
    cpu_s: float | None = None
    memory_peak_bytes: int | None = None


class ClusterRef(BaseModel):
    """Where a cluster placed a job: its scheduler, its id there, the devices it was given."""

    engine: str
    job_id: str
    devices: list[str] = Field(default_factory=list)


class KeptWork(BaseModel):
    """What the agent keeps of a finished job's /work: files and folders, and bytes."""

    files: int = 0
    bytes: int = 0


class JobRecord(BaseModel):
    id: str
    type: JobType = JobType.STANDARD
    owner: str
    status: JobStatus = JobStatus.PENDING
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    runtime: str | None = None
    limits: JobLimits = Field(default_factory=JobLimits)
    network: str = "none"
    command: list[str] | None = None
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    usage: Usage = Field(default_factory=Usage)
    node: str | None = None             # a cluster job's node
    cluster: ClusterRef | None = None   # a cluster job's place in its scheduler
    kept_work: KeptWork = Field(default_factory=KeptWork)


class BuildRequest(Strict):
    force: bool = False
    spec: str | None = Field(None, max_length=1 << 20)
    files: dict[str, str] = Field(default_factory=dict)

"""The session calls' data (API.md "Sessions"): request bodies and the session record."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, Field

from ..models import Environment, Inputs, JobLimits, OutputNames, RuntimeName, Strict, Upload, Usage


class SessionStatus(str, enum.Enum):
    STARTING = "STARTING"
    READY = "READY"
    BUSY = "BUSY"
    ENDED = "ENDED"


END_REASONS = ("deleted", "idle", "oom", "timeout", "exit", "lost")


class SessionRequest(Strict):
    """POST /v1/sessions: a job's sandbox settings, without a program (the session runs its runner)."""

    runtime: RuntimeName | None = None
    env: Environment = Field(default_factory=dict)
    limits: JobLimits = Field(default_factory=JobLimits)
    network: Literal["none", "bridge"] = "none"
    uploads: list[Upload] = Field(default_factory=list, max_length=1024)
    idle_timeout_s: float | None = Field(None, gt=0, description="end the session after this long without a cell; "
                                                                  "the agent's default and maximum apply")


class CellRequest(Strict):
    """POST /v1/sessions/{id}/cells."""

    code: str = Field(..., max_length=16 << 20)
    inputs: Inputs = Field(default_factory=dict)
    outputs: OutputNames = Field(default_factory=list, max_length=256)


class CompleteRequest(Strict):
    """POST /v1/sessions/{id}/complete."""

    code: str = Field(..., max_length=1 << 20)
    cursor_pos: int = Field(..., ge=0)


class SessionRecord(BaseModel):
    id: str
    owner: str
    runtime: str | None = None
    limits: JobLimits = Field(default_factory=JobLimits)
    network: str = "none"
    status: SessionStatus = SessionStatus.STARTING
    reason: str | None = None
    message: str | None = None
    cells: int = 0
    idle_timeout_s: float
    created_at: float
    last_active_at: float
    ended_at: float | None = None
    usage: Usage = Field(default_factory=Usage)


class SessionCreated(BaseModel):
    id: str
    status: SessionStatus


class CellQueued(BaseModel):
    cell: int


class Completion(BaseModel):
    matches: list[str]
    cursor_start: int
    cursor_end: int

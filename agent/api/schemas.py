"""The bodies only HTTP needs: what the API answers beside the domain's own records."""

from __future__ import annotations

from pydantic import BaseModel

from ..contract import JobStatus


class Created(BaseModel):
    id: str
    status: JobStatus


class LandlockHealth(BaseModel):
    """The kernel's Landlock ABI (0: none), the parts of the layer jobs get, and the parts this
    kernel lacks (jobs run without them)."""

    abi: int
    enforced: list[str]
    missing: list[str]


class Health(BaseModel):
    """Anyone may ask: nothing here names a path of the host."""

    status: str
    version: str
    cgroup: str
    landlock: LandlockHealth


class LimitsInfo(BaseModel):
    """`GET /v1/limits`: the limits a job of the caller gets when it sets none (null: no limit),
    and the most it may ask for; so a client shows the limits that will really apply."""

    defaults: dict[str, float | int | None]
    maximum: dict[str, float | int]


class FileEntry(BaseModel):
    path: str
    size: int
    mode: int


class FileListing(BaseModel):
    """GET /v1/jobs/{id}/files: a finished job's /work, regular files only, sorted by path."""

    files: list[FileEntry]
    truncated: bool


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody

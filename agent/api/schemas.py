"""The bodies only HTTP needs: what the API answers beside the domain's own records."""

from __future__ import annotations

from pydantic import BaseModel

from ..contract import JobStatus


class Created(BaseModel):
    id: str
    status: JobStatus


class Health(BaseModel):
    status: str
    version: str
    cgroup: str
    root: str


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

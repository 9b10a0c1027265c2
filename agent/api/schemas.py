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


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody

"""What one request, one connection and one user may make the agent hold (DESIGN.md: "the agent
around the sandbox is attack surface"). Plain data, read from the config's `api:` and `quotas:`;
every figure has a default that keeps an agent on a small host answering under abuse.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApiLimits(BaseModel):
    """HTTP: bytes and time a request may take before the agent gives up on it."""

    model_config = ConfigDict(extra="forbid")
    max_request_mb: int = Field(96, ge=1, le=4096, description="largest body of POST /v1/jobs (and "
                                "sessions); a 64 MB upload is 86 MB of base64")
    max_small_request_kb: int = Field(4096, ge=64, description="largest body of every other call "
                                      "(a runtime build's spec and files included)")
    body_budget_mb: int = Field(256, ge=1, description="bodies of all requests being read or handled at "
                                "once; a request that does not fit waits for its turn")
    body_wait_s: float = Field(30, gt=0, description="how long a body waits for the budget before a 503")
    header_timeout_s: float = Field(10, gt=0, le=300, description="a connection must have sent a "
                                    "whole request head this long after it opened (or after its last response)")
    body_timeout_s: float = Field(30, gt=0, le=600, description="longest silence while a body is sent")
    max_connections: int = Field(1000, ge=8, description="open connections; beyond it the oldest one "
                                 "that has not sent a whole request head is closed")


class Quotas(BaseModel):
    """What one user (a token's owner id) may have at once, and what the agent keeps."""

    model_config = ConfigDict(extra="forbid")
    live_jobs_per_user: int = Field(128, ge=1, description="jobs and sessions of one user running at once")
    live_jobs: int = Field(1024, ge=1, description="jobs running at once, all users together")
    streams_per_user: int = Field(128, ge=1, description="event streams one user holds open at once")
    kept_jobs_per_user: int = Field(10_000, ge=1, description="job records (finished ones included) of "
                                    "one user; beyond it a new job is refused (429) until the user deletes")
    kept_mb_per_user: int = Field(4096, ge=1, description="bytes of the /work copies kept for one user")
    kept_files_per_user: int = Field(100_000, ge=1, description="files and folders of the /work copies "
                                     "kept for one user")
    work_files: int = Field(20_000, ge=1, description="files and folders kept of one job's /work")
    retention_days: float = Field(30, gt=0, description="finished jobs older than this are removed")
    retention_check_s: float = Field(3600, gt=0, description="how often the agent looks for them")

"""The `jupyterhub:` section of the agent's config: where the hub is, and what its users may use.

```yaml
jupyterhub:
  api_url: http://127.0.0.1:8081/hub/api
  service_name: joblet
  admin_group: teachers
  quotas: {jobs: 4, sessions: 2, kept_mb: 1024}          # every hub user
  groups:
    students: {max_limits: {memory_mb: 1024, cpu_percent: 200}, quotas: {jobs: 2}}
    staff:    {max_limits: {memory_mb: 8192, cpu_percent: 800}}
  users:
    alice: {quotas: {kept_mb: 4096}}
```
A user in several configured groups gets, limit by limit, the most generous of them; a `users:`
entry overrides its groups. Local agent tokens are not hub users: none of this applies to them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

LIMIT_NAMES = ("cpu_percent", "memory_mb", "pids", "io_bps", "timeout_s", "disk_mb")
QUOTA_NAMES = ("jobs", "sessions", "kept_mb")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitCaps(_Strict):
    """The most one job of these users may ask for; unset: the agent's own `max_limits`."""

    cpu_percent: int | None = Field(None, ge=1)
    memory_mb: int | None = Field(None, ge=8)
    pids: int | None = Field(None, ge=4)
    io_bps: int | None = Field(None, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    disk_mb: int | None = Field(None, ge=1)


class Quotas(_Strict):
    """What one user may hold at once; unset: no quota."""

    jobs: int | None = Field(None, ge=0, description="jobs running (or starting) at once")
    sessions: int | None = Field(None, ge=0, description="sessions open at once")
    kept_mb: int | None = Field(None, ge=0, description="output and /work files of the user's "
                                                       "finished jobs that the agent keeps")


class Rules(_Strict):
    max_limits: LimitCaps = Field(default_factory=LimitCaps)
    quotas: Quotas = Field(default_factory=Quotas)


class HubConfig(_Strict):
    api_url: str = Field(..., pattern=r"^https?://[^\s]+$",
                         description="the hub's API, e.g. http://127.0.0.1:8081/hub/api "
                                     "(JUPYTERHUB_API_URL of a hub-managed service)")
    service_name: str = Field(..., min_length=1, max_length=255,
                              description="the agent's name in c.JupyterHub.services")
    admin_group: str | None = Field(None, description="members get the admin role, as hub admins do")
    require_access_scope: bool = Field(False, description="accept only tokens that carry "
                                       "access:services!service=<service_name> (README)")
    cache_s: float = Field(30, ge=0, le=55, description="how long the hub's answer for a token is "
                                                       "kept; a revoked token works at most this long")
    cache_entries: int = Field(4096, ge=16, le=1_000_000, description="tokens remembered at most")
    timeout_s: float = Field(3, gt=0, le=10, description="to connect to the hub, and for its answer")
    ca_file: str | None = Field(None, description="CA bundle of an HTTPS hub with a private CA")
    quotas: Quotas = Field(default_factory=Quotas)
    groups: dict[str, Rules] = Field(default_factory=dict)
    users: dict[str, Rules] = Field(default_factory=dict)

    @field_validator("api_url")
    @classmethod
    def _no_slash(cls, value: str) -> str:
        return value.rstrip("/")

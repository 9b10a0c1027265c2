"""RuntimeService: published runtimes and their calls (the builder lands with the runtimes issue)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .errors import BadRequest
from .jobs import JobService, RuntimeMounts
from .paths import AgentPaths


class RuntimeService:
    def __init__(self, paths: AgentPaths) -> None:
        self.paths = paths
        self.jobs: JobService | None = None

    def attach(self, jobs: JobService) -> None:
        self.jobs = jobs

    def published(self) -> list[str]:
        return sorted(p.parent.name for p in self.paths.runtimes.glob("*/runtime.yml"))

    def resolve(self, name: str) -> RuntimeMounts:
        known = self.published()
        raise BadRequest(f"unknown runtime {name!r}: published runtimes are {known or 'none'}; "
                         f"an admin builds one with %joblet runtime build {name}")

    def install_routes(self, app: FastAPI, caller: Any) -> None:
        from .api import _install_runtime_placeholders

        _install_runtime_placeholders(app, caller)

"""The minimal production root: the runtime `base` of the catalogue (runtimes/base), built like
any runtime (builder sandbox, `isolated/`, manifest, its own test, publish) and bound as every
production job's /usr (config `base: minimal`, the default; `base: host` keeps the host's /usr).

The agent never runs a production job on a half-made root. When no verified base is published,
it builds one: at start, before it serves (a first start takes that long once); later (a base
that failed verification or was removed), on the next job, which waits for that build. If the
build fails, jobs are refused with 503 and the reason, until an admin builds `base` again
(POST /v1/runtimes/base/build, `%joblet runtime build base --force`) or the agent restarts.
"""

from __future__ import annotations

import asyncio
import sys

from ..auth import Principal
from ..contract import JobStatus
from ..errors import AgentError, Unavailable
from ..jobs.spec import BASE_RUNTIME, RuntimeMounts
from ..models import BuildRequest
from .service import RuntimeService

AGENT = Principal(id="agent", name="agent", role="admin")


def _say(line: str) -> None:
    print(f"joblet-agent: {line}", file=sys.stderr, flush=True)


class BaseImage:
    """The verified base image for jobs (JobService.base), built once when it is missing."""

    def __init__(self, runtimes: RuntimeService) -> None:
        self.runtimes = runtimes
        self.building: asyncio.Task[str | None] | None = None
        self.failed: str | None = None  # why the agent's own build failed; cleared by a published base

    def _published(self) -> tuple[RuntimeMounts | None, str]:
        try:
            return self.runtimes.published.resolve(BASE_RUNTIME), ""
        except AgentError as exc:
            return None, exc.message

    async def prepare(self) -> None:
        """At agent start, before it serves: build the base if none is verified (a failure is in
        the log, and jobs are refused with it)."""
        try:
            await self()
        except Unavailable:
            pass

    async def __call__(self) -> RuntimeMounts:
        found, why = self._published()
        if found is not None:
            self.failed = None
            return found
        if self.building is None and self.failed is None:
            self.building = asyncio.get_running_loop().create_task(self._build(why))
        if self.building is not None:
            self.failed = await asyncio.shield(self.building)
            self.building = None
            found, why = self._published()
            if found is not None:
                return found
        raise Unavailable(f"production jobs run on the minimal base image, which is not there: "
                          f"{self.failed or why}. An admin builds it with `%joblet runtime build base "
                          f"--force`; `base: host` in the agent's config runs jobs on the host's /usr instead")

    async def _build(self, why: str) -> str | None:
        """Build `base`; None when it is published, else what failed (also in the agent's log)."""
        _say(f"building the minimal base image for production jobs ({why})")
        try:
            started = await self.runtimes.build(AGENT, BASE_RUNTIME, BuildRequest(force=True))
        except AgentError as exc:
            if BASE_RUNTIME in self.runtimes.building:  # an admin's build runs: wait for it
                started = {"id": self.runtimes.building[BASE_RUNTIME].job_id}
            else:
                _say(f"the base image could not be built: {exc.message}")
                return exc.message
        problem = "its log ended without an exit event"
        async for event in await self.runtimes.jobs.events(AGENT, started["id"], 0, follow=True):
            if event["type"] == "exit":
                if event["status"] == JobStatus.COMPLETED.value:
                    _say(f"base image built and published (build job {started['id']})")
                    return None
                problem = str(event.get("message") or event.get("reason"))
                break
        problem = f"build job {started['id']} failed: {problem}"
        _say(f"the base image could not be built: {problem}")
        return problem

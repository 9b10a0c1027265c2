"""The HTTP API: the route table, translating HTTP to calls on the services and back.

It knows nothing of mounts or cgroups; errors become statuses in api/errors.py. (No postponed
annotations here: FastAPI reads the route signatures, whose types are local to `create_app`.)
"""

import inspect
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..auth import Authenticator, Principal
from ..builds.service import RuntimeService
from ..contract import JOB_ID, RUNTIME_NAME
from ..jobs import spec as jobspec
from ..jobs.service import JobService
from ..models import BuildRequest, JobRecord, JobRequest
from ..sandbox import landlock
from ..sessions.service import SessionService
from .errors import RESPONSES, install_error_handlers
from .guard import RequestGuard
from .hot import HotRoutes
from .schemas import Created, FileEntry, FileListing, Health, LandlockHealth, LimitsInfo
from .session_routes import add_session_routes
from .streams import StreamQuota


def create_app(service: JobService, tokens: Authenticator, runtimes: RuntimeService,
               sessions: SessionService | None = None) -> FastAPI:
    app = new_app(title="joblet-nb agent", version=__version__,
                  description="Runs notebook cells in isolated Linux sandboxes.", responses=RESPONSES)
    install_error_handlers(app)
    app.state.service = service

    async def authenticate(authorization: str | None) -> Principal:
        """Local tokens on the event loop (a plain function here would cost a thread hand-off per
        request); a hub token in a thread, since asking the hub may block."""
        return tokens.local(authorization) or await run_in_threadpool(tokens.remote, authorization)

    streams = StreamQuota(service.config.quotas.streams_per_user)
    app.add_middleware(RequestGuard, limits=service.config.api, authenticate=authenticate,
                       hot=HotRoutes(service, streams))

    async def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
        known = getattr(request.state, "principal", None)  # RequestGuard checked the token already
        return known if isinstance(known, Principal) else await authenticate(authorization)

    Caller = Annotated[Principal, Depends(caller)]
    JobId = Annotated[str, _path_job_id()]

    sandbox_layers = LandlockHealth(**landlock.status())  # the kernel's answer does not change

    @app.get("/v1/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", version=__version__, cgroup=service.driver.version, landlock=sandbox_layers)

    @app.get("/v1/whoami")
    async def whoami(who: Caller) -> dict[str, Any]:
        return service.quota.account(who)

    @app.get("/v1/limits", response_model=LimitsInfo)
    async def limits(who: Caller) -> LimitsInfo:
        """What a job of this caller gets for each limit it leaves out, and the most it may ask for."""
        return LimitsInfo(**jobspec.limits_info(service.config.defaults, service.config.max_limits, who.policy))

    @app.post("/v1/jobs", status_code=201, response_model=Created)
    async def run_job(body: JobRequest, who: Caller) -> Created:
        record = await service.start(who, body)
        return Created(id=record.id, status=record.status)

    @app.get("/v1/jobs", response_model=list[JobRecord])
    async def list_jobs(who: Caller) -> list[JobRecord]:
        return service.list_jobs(who)

    @app.get("/v1/jobs/{job_id}", response_model=JobRecord)
    async def get_job(job_id: JobId, who: Caller) -> JobRecord:
        return service.get(who, job_id)

    @app.get("/v1/jobs/{job_id}/events", response_class=StreamingResponse,
             responses={200: {"content": {"application/x-ndjson": {}}}})
    async def job_events(job_id: JobId, who: Caller, follow: bool = False,
                         after: Annotated[int, Query(ge=0, le=1 << 62)] = 0) -> StreamingResponse:
        lines = await service.event_lines(who, job_id, after, follow)
        return streams.response(who.id, lines, media_type="application/x-ndjson")

    @app.post("/v1/jobs/{job_id}/stop", response_model=JobRecord)
    async def stop_job(job_id: JobId, who: Caller) -> JobRecord:
        return await service.stop(who, job_id)

    @app.delete("/v1/jobs/{job_id}", status_code=204, response_class=Response)
    async def delete_job(job_id: JobId, who: Caller) -> Response:
        await service.delete(who, job_id)
        return Response(status_code=204)

    @app.get("/v1/jobs/{job_id}/files", response_model=FileListing)
    async def job_files(job_id: JobId, who: Caller) -> FileListing:
        files, truncated = service.list_files(who, job_id)
        return FileListing(files=[FileEntry(path=f.path, size=f.size, mode=f.mode) for f in files],
                           truncated=truncated)

    @app.get("/v1/jobs/{job_id}/files/{path:path}", response_class=StreamingResponse,
             responses={200: {"content": {"application/octet-stream": {}}}})
    async def job_file(job_id: JobId, path: str, who: Caller) -> StreamingResponse:
        fd = service.open_file(who, job_id, path)
        size = os.fstat(fd).st_size
        return StreamingResponse(_chunks(fd), media_type="application/octet-stream",
                                 headers={"Content-Length": str(size)})

    RuntimeName = Annotated[str, PathParam(pattern=RUNTIME_NAME.pattern, max_length=63,
                                           description="a runtime name: lowercase letters, digits, '.', '_', '-'")]

    @app.get("/v1/runtimes")
    async def list_runtimes(who: Caller) -> list[dict[str, Any]]:
        return runtimes.listing()

    @app.get("/v1/runtimes/{name}")
    async def get_runtime(name: RuntimeName, who: Caller) -> dict[str, Any]:
        return runtimes.info(name)

    @app.post("/v1/runtimes/{name}/build", status_code=201)
    async def build_runtime(name: RuntimeName, who: Caller, body: BuildRequest | None = None) -> dict[str, Any]:
        return await runtimes.build(who, name, body or BuildRequest())

    @app.post("/v1/runtimes/{name}/test")
    async def test_runtime(name: RuntimeName, who: Caller) -> dict[str, Any]:
        return await runtimes.test(who, name)

    @app.delete("/v1/runtimes/{name}", status_code=204, response_class=Response)
    async def remove_runtime(name: RuntimeName, who: Caller) -> Response:
        runtimes.remove(who, name)
        return Response(status_code=204)

    if sessions is not None:
        add_session_routes(app, sessions, Caller, streams)
    return app


def new_app(**options: Any) -> FastAPI:
    """A FastAPI app without FastAPI's own OpenTelemetry hooks (where its version has them): they
    asked the global providers on every request whether any is configured (three environment
    reads and three provider look-ups: about half of the time FastAPI's layers above the request
    guard took, per request). The agent configures no OpenTelemetry."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        options["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    return FastAPI(**options)


def _path_job_id() -> Any:
    return PathParam(pattern=JOB_ID.pattern, description="a job id (16 hex digits)")


async def _chunks(fd: int) -> AsyncIterator[bytes]:
    try:
        while chunk := os.read(fd, 1 << 20):
            yield chunk
    finally:
        os.close(fd)

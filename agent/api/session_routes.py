"""The `/v1/sessions` routes (API.md "Sessions"): HTTP onto the SessionService and back."""

from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse

from ..contract import JOB_ID
from ..sessions.models import (CellQueued, CellRequest, CompleteRequest, Completion, SessionCreated, SessionRecord,
                               SessionRequest)
from ..sessions.service import SessionService
from .streams import StreamQuota


def add_session_routes(app: FastAPI, sessions: SessionService, Caller: Any, streams: StreamQuota) -> None:
    SessionId = Annotated[str, PathParam(pattern=JOB_ID.pattern, description="a session id (16 hex digits)")]

    @app.post("/v1/sessions", status_code=201, response_model=SessionCreated)
    async def start_session(body: SessionRequest, who: Caller) -> SessionCreated:
        record = await sessions.start(who, body)
        return SessionCreated(id=record.id, status=record.status)

    @app.get("/v1/sessions", response_model=list[SessionRecord])
    async def list_sessions(who: Caller) -> list[SessionRecord]:
        return sessions.list_sessions(who)

    @app.get("/v1/sessions/{session_id}", response_model=SessionRecord)
    async def get_session(session_id: SessionId, who: Caller) -> SessionRecord:
        return sessions.get(who, session_id)

    @app.post("/v1/sessions/{session_id}/cells", status_code=201, response_model=CellQueued)
    async def run_cell(session_id: SessionId, body: CellRequest, who: Caller) -> CellQueued:
        return CellQueued(cell=sessions.submit(who, session_id, body))

    @app.get("/v1/sessions/{session_id}/events", response_class=StreamingResponse,
             responses={200: {"content": {"application/x-ndjson": {}}}})
    async def session_events(session_id: SessionId, who: Caller, follow: bool = False,
                             after: Annotated[int, Query(ge=0, le=1 << 62)] = 0) -> StreamingResponse:
        lines = await sessions.event_lines(who, session_id, after, follow)
        return streams.response(who.id, lines, media_type="application/x-ndjson")

    @app.post("/v1/sessions/{session_id}/interrupt", status_code=204, response_class=Response)
    async def interrupt_session(session_id: SessionId, who: Caller) -> Response:
        sessions.interrupt(who, session_id)
        return Response(status_code=204)

    @app.post("/v1/sessions/{session_id}/complete", response_model=Completion)
    async def complete_in_session(session_id: SessionId, body: CompleteRequest, who: Caller) -> dict[str, Any]:
        return await sessions.complete(who, session_id, body)

    @app.delete("/v1/sessions/{session_id}", status_code=204, response_class=Response)
    async def delete_session(session_id: SessionId, who: Caller) -> Response:
        await sessions.delete(who, session_id)
        return Response(status_code=204)

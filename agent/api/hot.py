"""The two calls of every job's life, `POST /v1/jobs` and `GET /v1/jobs/{id}/events`, answered
straight from the request guard when they come in their plain form, past FastAPI's router, its
dependency solving, parameter parsing and response model (about a third of the agent's Python time
per trivial job went there).

What is answered here is answered as the routes in app.py answer it, with the same service calls,
the same response objects and the same errors (`errors.py`). Anything else (another content type,
a query this module does not read exactly, a body that does not validate) is left to FastAPI, so
that every refusal keeps the words and status the routes give it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response

from ..auth import Principal
from ..errors import AgentError
from ..jobs.service import JobService
from ..models import JobRequest
from .errors import error_response, status_of
from .streams import StreamQuota

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

EVENTS = re.compile(r"/v1/jobs/([0-9a-f]{16})/events")
MAX_AFTER = 1 << 62  # the route's bound on `after`


def events_query(query: bytes) -> tuple[int, bool] | None:
    """(after, follow) of a query that names each at most once, `follow` as true/false and
    `after` as plain digits within the route's bounds; None for anything else (FastAPI reads it)."""
    after, follow = 0, False
    seen: set[bytes] = set()
    for part in query.split(b"&") if query else ():
        name, eq, value = part.partition(b"=")
        if not eq or name in seen:
            return None
        seen.add(name)
        if name == b"follow" and value in (b"true", b"false"):
            follow = value == b"true"
        elif name == b"after" and value.isdigit() and len(value) <= 19 and int(value) <= MAX_AFTER:
            after = int(value)
        else:
            return None
    return after, follow


def job_request(headers: dict[str, str], body: bytes | None) -> JobRequest | None:
    """The request a JSON body makes, validated as FastAPI validates it (the parsed JSON, in
    Python mode); None when FastAPI should say what is wrong."""
    if body is None or headers.get("content-type") != "application/json":
        return None
    try:
        return JobRequest.model_validate(json.loads(body))
    except (ValueError, ValidationError):  # bad JSON, or a body the route refuses in its own words
        return None


class HotRoutes:
    def __init__(self, service: JobService, streams: StreamQuota) -> None:
        self.service = service
        self.streams = streams

    def wants(self, scope: Scope) -> bool:
        """Whether the call may be one of the two (cheap: method and path only)."""
        if scope["method"] == "POST":
            return scope["path"] == "/v1/jobs" and not scope.get("query_string")
        return scope["method"] == "GET" and scope["path"].endswith("/events")

    async def serve(self, scope: Scope, headers: dict[str, str], body: bytes | None, who: Any,
                    receive: Receive, send: Send) -> bool:
        """Answer the call (True), or leave it untouched to FastAPI (False)."""
        if not isinstance(who, Principal):
            return False
        if scope["method"] == "POST":
            req = job_request(headers, body)
            if req is None:
                return False
            response: Response = await self._answer(self._run_job(who, req))
        else:
            match = EVENTS.fullmatch(scope["path"])
            query = events_query(scope.get("query_string", b"")) if match else None
            if match is None or query is None:
                return False
            response = await self._answer(self._events(who, match.group(1), *query))
        await response(scope, receive, send)
        return True

    async def _run_job(self, who: Principal, req: JobRequest) -> Response:
        record = await self.service.start(who, req)
        body = json.dumps({"id": record.id, "status": record.status.value}, ensure_ascii=False,
                          separators=(",", ":")).encode()
        return Response(body, status_code=201, media_type="application/json")

    async def _events(self, who: Principal, job_id: str, after: int, follow: bool) -> Response:
        lines = await self.service.event_lines(who, job_id, after, follow)
        return self.streams.response(who.id, lines, media_type="application/x-ndjson")

    @staticmethod
    async def _answer(call: Awaitable[Response]) -> Response:
        try:
            return await call
        except AgentError as exc:  # as the app's handler answers it
            return error_response(*status_of(exc), exc.message)


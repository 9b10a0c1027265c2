"""Errors to HTTP: each named error gets one status and code here, and nowhere else.

Every error leaves as `{"error": {"code", "message"}}`; request validation errors become one
readable line per problem instead of pydantic's nested list.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (AgentError, BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, RequestTimeout,
                      SessionEnded, TooMany, Unauthorized, Unavailable)
from .schemas import ErrorResponse

STATUS: dict[type[AgentError], tuple[int, str]] = {
    BadRequest: (400, "bad_request"),
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    NotFound: (404, "not_found"),
    RequestTimeout: (408, "timeout"),
    Conflict: (409, "conflict"),
    SessionEnded: (409, "session_ended"),
    PayloadTooLarge: (413, "too_large"),
    TooMany: (429, "too_many"),
    Unavailable: (503, "unavailable"),
}
INTERNAL = (500, "internal")
RESPONSES: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for status, _ in STATUS.values()}


def status_of(exc: AgentError) -> tuple[int, str]:
    """(HTTP status, code) of an error, by its nearest named class."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return INTERNAL


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AgentError)
    async def agent_error(_request: Request, exc: AgentError) -> JSONResponse:
        return error_response(*status_of(exc), exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "bad_request", describe(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = "no such call (see /docs or /openapi.json)" if exc.status_code == 404 else str(exc.detail)
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), message)


def describe(errors: Any) -> str:
    """One readable line per problem: where it is and what is wrong."""
    parts = []
    for err in list(errors)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"

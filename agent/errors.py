"""The agent's named errors, each mapped to one HTTP status in one place (api.py)."""

from __future__ import annotations


class AgentError(Exception):
    """Base: `code` is machine-readable, the message says what to change."""

    status = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(AgentError):
    status, code = 400, "bad_request"


class Unauthorized(AgentError):
    status, code = 401, "unauthorized"


class Forbidden(AgentError):
    status, code = 403, "forbidden"


class NotFound(AgentError):
    status, code = 404, "not_found"


class Conflict(AgentError):
    status, code = 409, "conflict"


class PayloadTooLarge(AgentError):
    status, code = 413, "too_large"


class Unavailable(AgentError):
    status, code = 503, "unavailable"


class CannotIsolate(RuntimeError):
    """The host lacks something isolation needs; the agent refuses to start and says what."""

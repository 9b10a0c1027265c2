"""The agent's named errors. The services raise them; the API maps each to one HTTP status
(api/errors.py), so no service knows about HTTP."""

from __future__ import annotations


class AgentError(Exception):
    """Base: the message says what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(AgentError):
    """The request cannot be done as asked (a field, a limit, an unknown runtime)."""


class Unauthorized(AgentError):
    """No token, or one the agent does not know."""


class Forbidden(AgentError):
    """A known caller asking for what its role may not do."""


class NotFound(AgentError):
    """No such job, runtime or file (for this caller)."""


class Conflict(AgentError):
    """Not in the state the call needs (still running, already built, refused runtime)."""


class SessionEnded(Conflict):
    """A cell or call for a session that has ended: the caller needs a new session."""


class PayloadTooLarge(AgentError):
    """A body beyond the agent's limits."""


class TooMany(AgentError):
    """A per-user or agent-wide quota is full; the message names it and what frees it."""


class RequestTimeout(AgentError):
    """A request body that stalled, or a client gone while sending it."""


class Unavailable(AgentError):
    """The agent cannot serve this now (its sandbox launcher is down)."""


class CannotIsolate(RuntimeError):
    """The host lacks something isolation needs; the agent refuses to start and says what."""

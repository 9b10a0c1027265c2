"""Exceptions of the notebook side, each with a message a user can act on.

None of this imports IPython: the client raises these from plain scripts too. The
`_render_traceback_` hooks are what IPython (and so nbclient and papermill) shows instead of
a Python traceback through requests' internals, which would bury the one line that matters.
"""

from __future__ import annotations

from typing import Any

RED = "\x1b[31m"
BOLD = "\x1b[1m"
RESET = "\x1b[0m"


class JobletError(Exception):
    """Anything the agent refused or could not do. The message says what to change."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.status = status

    def _render_traceback_(self) -> list[str]:
        # One line: the agent's message already says what to do; a stack would hide it.
        return [f"{RED}{type(self).__name__}{RESET}: {self.message}"]


class AuthError(JobletError):
    """401/403: a missing, wrong or under-privileged token."""


class NotFoundError(JobletError):
    """404: no such job, file or runtime (or not yours)."""


class BadRequestError(JobletError):
    """400/409/422: the request was refused; the agent says which field."""


class AgentUnavailable(JobletError):
    """The agent could not be reached at all (refused, DNS, timeout)."""


class CertificateError(AgentUnavailable):
    """An HTTPS agent whose certificate is not the one this client pins."""


class RuntimeMissing(JobletError):
    """A notebook requires a runtime this agent does not have."""


class OutputsMissing(JobletError):
    """A job completed without a value that `--out` asked for (undefined, not JSON, too large)."""


class JobFailed(Exception):
    """A job that did not complete. Fails the cell so nbclient and papermill stop too."""

    def __init__(self, record: dict[str, Any], stderr_tail: str = "", tail_lines: int = 20):
        self.record = record
        self.job_id = str(record.get("id", "?"))
        self.status = str(record.get("status", "FAILED"))
        self.reason = str(record.get("reason") or "exit")
        self.exit_code = record.get("exit_code")
        self.signal = record.get("signal")
        self.stderr_tail = stderr_tail
        self.tail_lines = tail_lines
        super().__init__(self.summary())

    def summary(self) -> str:
        """One line: which job, how it ended, why."""
        parts = [f"joblet job {self.job_id} {self.status}", f"reason={self.reason}"]
        if self.exit_code is not None:
            parts.append(f"exit_code={self.exit_code}")
        if self.signal:
            parts.append(f"signal={self.signal}")
        hint = REASON_HINTS.get(self.reason)
        message = self.record.get("message")
        text = ", ".join(parts)
        if message and self.reason != "exit":
            text += f": {message}"
        if hint and not (message and self.reason != "exit"):
            text += f" ({hint})"
        return text

    def _render_traceback_(self) -> list[str]:
        lines = [f"{RED}{BOLD}JobFailed{RESET}: {self.summary()}"]
        tail = self.stderr_tail.rstrip("\n").splitlines()[-self.tail_lines:]
        if tail:
            lines.append(f"{BOLD}--- last {len(tail)} line(s) of the job's stderr ---{RESET}")
            lines.extend(tail)
        return lines


REASON_HINTS: dict[str, str] = {
    "oom": "the job ran out of memory: raise --max-memory",
    "timeout": "the job hit its time limit: raise --timeout",
    "stopped": "the job was stopped",
    "setup": "the sandbox could not be made; the agent's message says why",
    "lost": "the agent restarted while the job ran",
}


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C during a cell: the remote job was stopped first; this says how it ended."""

    def __init__(self, job_id: str, status: str, detail: str = ""):
        self.job_id = job_id
        self.status = status
        self.detail = detail
        super().__init__(self.summary())

    def summary(self) -> str:
        text = f"joblet job {self.job_id} interrupted: {self.status}"
        return f"{text}; {self.detail}" if self.detail else text

    def _render_traceback_(self) -> list[str]:
        return [f"{RED}KeyboardInterrupt{RESET}: {self.summary()}"]

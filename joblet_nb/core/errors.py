"""Exceptions of the notebook side, each with a message a user can act on.

None of this imports IPython: the client raises these from plain scripts too. The
`_render_traceback_` hooks are what IPython (and so nbclient and papermill) shows instead of
a Python traceback through requests' internals, which would bury the one line that matters.
"""

from __future__ import annotations

from .records import JobRecord

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


class AgentTimeout(AgentUnavailable):
    """The agent took longer to answer than the client's `timeout`."""


class CertificateError(AgentUnavailable):
    """An HTTPS agent whose certificate is not the one this client pins."""


class RuntimeMissing(JobletError):
    """A notebook requires a runtime this agent does not have; `how` says how an admin builds it."""

    def __init__(self, runtime: str, url: str, how: str = ""):
        self.runtime, self.url = runtime, url
        how = how or f"POST /v1/runtimes/{runtime}/build"
        super().__init__(f"runtime {runtime!r} is not on the agent at {url}; an admin builds it "
                         f"with {how}", code="runtime_missing", status=404)

    def built_with(self, how: str) -> "RuntimeMissing":
        """The same error, saying how to build the runtime where the caller's user is."""
        return RuntimeMissing(self.runtime, self.url, how)


class OutputsMissing(JobletError):
    """A job completed without a value that `--out` asked for (undefined, not JSON, too large)."""


class JobFailed(Exception):
    """A job that did not complete. Fails the cell so nbclient and papermill stop too."""

    def __init__(self, record: JobRecord, stderr_tail: str = "", tail_lines: int = 20, hint: str = ""):
        self.record = record
        self.hint = hint  # one line naming the option that fixes it (core.hints)
        self.job_id = record.id
        self.status = record.status.value
        self.reason = record.reason or "exit"
        self.exit_code = record.exit_code
        self.signal = record.signal
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
        message = self.record.message
        text = ", ".join(parts)
        if message and self.reason != "exit":
            text += f": {message}"
        if hint and not (message and self.reason != "exit"):
            text += f" ({hint})"
        return text

    def _render_traceback_(self) -> list[str]:
        lines = [f"{RED}{BOLD}JobFailed{RESET}: {self.summary()}"]
        tail = self.stderr_tail.rstrip("\n").splitlines()[-self.tail_lines:] if self.tail_lines > 0 else []
        if tail:
            lines.append(f"{BOLD}--- last {len(tail)} line(s) of the job's stderr ---{RESET}")
            lines.extend(tail)
        if self.hint:
            lines.append(self.hint)
        return lines


REASON_HINTS: dict[str, str] = {
    "oom": "the job ran out of memory: raise --max-memory",
    "timeout": "the job hit its time limit: raise --timeout",
    "stopped": "the job was stopped",
    "setup": "the sandbox could not be made; the agent's message says why",
    "lost": "the agent restarted while the job ran",
}


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C while following a job: the job was stopped first (or, when `detached`, left
    running); this says how it ended. `with_hint` adds what the caller's user can do next."""

    def __init__(self, job_id: str, status: str, detail: str = "", detached: bool = False):
        self.job_id = job_id
        self.status = status
        self.detail = detail
        self.detached = detached
        self.hint = ""
        super().__init__(self.summary())

    def with_hint(self, hint: str) -> "JobInterrupted":
        self.hint = hint
        self.args = (self.summary(),)
        return self

    def summary(self) -> str:
        text = f"joblet job {self.job_id} interrupted: {self.status}"
        text = f"{text}; {self.detail}" if self.detail else text
        return f"{text}; {self.hint}" if self.hint else text

    def _render_traceback_(self) -> list[str]:
        return [f"{RED}KeyboardInterrupt{RESET}: {self.summary()}"]

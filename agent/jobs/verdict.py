"""How a job ended, decided from what its sandbox reported (sandbox/outcome.py: what a holder
records, or what an executor heard) and what the agent did to it.

The order of the checks is the contract: a failed set-up wins over everything, a stop or timeout
the agent caused wins over how the job died of it, an OOM kill wins over the SIGKILL it caused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..contract import JobStatus
from ..fs import open_beneath
from ..models import JobLimits
from ..sandbox.outcome import Outcome
from ..sandbox.status import Kind
from joblet_nb.core.untrusted import filter_bundle

OUTPUTS_FILE = ".joblet/outputs.json"
DISPLAY_FILE = ".joblet/display.json"


@dataclass(frozen=True)
class Verdict:
    """How a job ended: what its record and its log's `exit` event say."""

    status: JobStatus
    reason: str
    message: str | None = None
    exit_code: int | None = None
    signal: int | None = None

    def failed(self, reason: str, message: str) -> "Verdict":
        """This verdict turned into a failure of a later phase, keeping the exit code and signal."""
        return replace(self, status=JobStatus.FAILED, reason=reason, message=message)

    def exit_event(self) -> dict[str, Any]:
        """The log's last event (API.md `exit`); built here and nowhere else."""
        event: dict[str, Any] = {"type": "exit", "status": self.status.value, "exit_code": self.exit_code,
                                 "reason": self.reason}
        if self.signal:
            event["signal"] = self.signal
        if self.message:
            event["message"] = self.message
        return event


def decide(outcome: Outcome, stop_reason: str | None, oom: bool, limits: JobLimits) -> Verdict:
    """The verdict, checked in the contract's order (see the module's docstring)."""
    def ended(status: JobStatus, reason: str, message: str | None = None, exit_code: int | None = None) -> Verdict:
        return Verdict(status, reason, message, outcome.exit_code if exit_code is None else exit_code,
                       outcome.signal)

    end = outcome.end
    if end == Kind.SETUP_ERROR:
        return ended(JobStatus.FAILED, "setup", outcome.agent_error or outcome.message)
    if stop_reason == "stopped":
        return ended(JobStatus.STOPPED, "stopped")
    if stop_reason == "timeout":
        return ended(JobStatus.FAILED, "timeout", f"the job ran longer than {limits.timeout_s:g}s")
    if oom:
        return ended(JobStatus.FAILED, "oom", f"the job used more than {limits.memory_mb} MB of memory")
    if end == Kind.EXEC_ERROR:
        return ended(JobStatus.FAILED, "exit", outcome.message, exit_code=127)
    if end != Kind.EXIT:
        return ended(JobStatus.FAILED, "signal", "the sandbox ended without reporting an exit status")
    if outcome.signal:
        return ended(JobStatus.FAILED, "signal", f"killed by signal {outcome.signal}")
    if outcome.exit_code == 0:
        return ended(JobStatus.COMPLETED, "exit")
    return ended(JobStatus.FAILED, "exit", f"exited with code {outcome.exit_code}")


def of_outcome(outcome: Outcome, limits: JobLimits) -> Verdict:
    """The verdict of what a job's holder recorded, stop and OOM included (a job that ended while
    no agent ran)."""
    return decide(outcome, outcome.stop_reason, outcome.oom, limits)


def lost(message: str) -> Verdict:
    """A job whose end nobody recorded: the agent cannot know how it went."""
    return Verdict(JobStatus.FAILED, "lost", message)


def from_exit_event(event: dict[str, Any]) -> Verdict:
    """The verdict a log's `exit` event already states (a record saved before it was written)."""
    return Verdict(JobStatus(event["status"]), str(event.get("reason") or "lost"), event.get("message"),
                   event.get("exit_code"), event.get("signal"))


def exec_note(outcome: Outcome | None) -> list[dict[str, Any]]:
    """The job's command could not be started: its message, as the job's stderr, before the end."""
    if outcome is None or outcome.end != Kind.EXEC_ERROR:
        return []
    return [{"type": "stderr", "data": (outcome.message or "") + "\n"}]


def outputs_event(artifacts: Path, max_bytes: int) -> dict[str, Any]:
    """The `outputs` event of a script job: its JSON values, their size, and what was missing.
    Sizes are stated and an oversized result is refused whole, never cut."""
    try:
        fd = open_beneath(str(artifacts), OUTPUTS_FILE)
    except OSError:
        return {"type": "outputs", "values": {}, "error": "the cell produced no outputs file"}
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            return {"type": "outputs", "values": {}, "bytes": size,
                    "error": f"outputs are {size} bytes; the limit is {max_bytes}"}
        try:
            data = json.loads(f.read())
        except ValueError:
            return {"type": "outputs", "values": {}, "error": "the outputs file is not JSON"}
    return {"type": "outputs", "values": data.get("values", {}), "bytes": size,
            "missing": data.get("missing", []), "errors": data.get("errors", {})}


def display_events(artifacts: Path, max_bytes: int) -> list[dict[str, Any]]:
    """`result` (a cell's last-line value) and `display` (its open figures) events, from what the
    cell runner left; the data is untrusted and filtered before it is logged (API.md, sessions)."""
    try:
        fd = open_beneath(str(artifacts), DISPLAY_FILE)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_size > max_bytes:
            return [{"type": "display", "data": {"text/plain": f"[joblet] not shown: the cell's display "
                                                               f"data is over {max_bytes} bytes"}}]
        try:
            data = json.loads(f.read())
        except ValueError:
            return []
    if not isinstance(data, dict):
        return []
    events = []
    if data.get("result") is not None:
        events.append({"type": "result", "data": filter_bundle(data["result"])})
    figures = data.get("display")
    for bundle in figures if isinstance(figures, list) else []:
        events.append({"type": "display", "data": filter_bundle(bundle)})
    return events

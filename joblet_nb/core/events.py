"""A job's events (API.md), one class per kind, read from the NDJSON stream by `parse_event`.

Kinds an agent adds later arrive as a plain `Event` with their fields in `extra`, so a client
that does not know them yet passes them on instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .records import JobRecord, JobStatus, from_json


@dataclass(frozen=True)
class Event:
    """Any event: its place in the stream and its kind."""

    seq: int
    type: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusEvent(Event):
    status: JobStatus = JobStatus.RUNNING


@dataclass(frozen=True)
class OutputEvent(Event):
    """`stdout` or `stderr`: a chunk of the job's output, as the agent decoded it."""

    data: str = ""


@dataclass(frozen=True)
class ProgressEvent(Event):
    """A runtime build's phase: step `step` of `steps`."""

    phase: str = ""
    step: int = 0
    steps: int = 0
    message: str = ""

    def text(self) -> str:
        where = f"[{self.step}/{self.steps}] " if self.steps else ""
        return f"{where}{self.phase}: {self.message}"


@dataclass(frozen=True)
class OutputsEvent(Event):
    """The `--out` values of a script job, their JSON size, and what could not be returned."""

    values: dict[str, Any] = field(default_factory=dict)
    bytes: int | None = None
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # the whole result was refused (too large, not JSON, no file)


@dataclass(frozen=True)
class ExitEvent(Event):
    """How the job ended; the last event of its stream."""

    status: JobStatus = JobStatus.FAILED
    exit_code: int | None = None
    reason: str | None = None
    signal: int | None = None
    message: str | None = None
    record: dict[str, Any] | None = None  # the job's record as it ended, from agents that send it

    def applied_to(self, record: JobRecord) -> JobRecord:
        """`record` with this ending (a record fetched a moment before the job ended lags it)."""
        return replace(record, status=self.status, exit_code=self.exit_code, reason=self.reason,
                       signal=self.signal, message=self.message)

    def ended_record(self) -> JobRecord | None:
        """The record this event carries, if it carries one that says the job ended (an agent of
        this project sends it: no GET is needed after the stream ends)."""
        if not isinstance(self.record, dict):
            return None
        try:
            record = JobRecord.from_json(self.record)
        except (TypeError, ValueError):
            return None
        return self.applied_to(record) if record.finished else None


@dataclass(frozen=True)
class DisplayEvent(Event):
    """`result` (a cell's last-line value) or `display` (a figure it left open): a mime bundle
    from the sandbox, untrusted; the agent filtered it, and the notebook filters it again."""

    data: dict[str, Any] = field(default_factory=dict)


AGENT_AWAY = "agent-away"


@dataclass(frozen=True)
class AgentAway(Event):
    """Made by the client, never sent by an agent: the stream broke and the agent did not answer
    for `seconds`, then it did, and the stream goes on after the last event seen (nothing lost,
    nothing twice). Its seq is 0: it is no event of the job's log."""

    seconds: float = 0.0

    def text(self) -> str:
        return f"[joblet] the agent was away for {self.seconds:.1f} s; following again, nothing was lost\n"


KINDS: dict[str, type[Event]] = {
    "status": StatusEvent, "stdout": OutputEvent, "stderr": OutputEvent,
    "progress": ProgressEvent, "outputs": OutputsEvent, "exit": ExitEvent,
    "result": DisplayEvent, "display": DisplayEvent, AGENT_AWAY: AgentAway,
}


def parse_event(data: dict[str, Any]) -> Event:
    """The typed event of one NDJSON line."""
    cls = KINDS.get(str(data.get("type")), Event)
    typed: dict[str, Any] = {"seq": int(data.get("seq") or 0), "type": str(data.get("type"))}
    if "status" in data and cls in (StatusEvent, ExitEvent):
        typed["status"] = JobStatus(data["status"])
    return from_json(cls, data, **typed)

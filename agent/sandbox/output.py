"""What a holder makes of its job's stdout and stderr: the events it writes into the job's log.

A job's output is text: `stdout`/`stderr` events, decoded as UTF-8 (invalid bytes replaced), up to
the job's byte cap, after which one note says that the rest is not kept (the pipes are still
drained, so the job never blocks on them). Other sandboxes (a session's runner, whose stdout
carries frames) register a translator of their own in `TRANSLATORS`, by name; the spec names the
one its holder uses, and the launcher imports the modules the agent names (launcher.py), so this
layer imports nothing above it. A translator sees the output and the input the agent sends for
the sandbox's stdin (it decides what goes to stdin, and when), and answers each with a `Step`:
events for the log, bytes for stdin, notices for the agents (control.py `notice`).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .outcome import Outcome
from .spec import SandboxSpec

Event = dict[str, Any]


@dataclass
class Step:
    events: list[Event] = field(default_factory=list)     # into the log, in order
    stdin: bytes = b""                                     # to the sandbox's stdin, now
    notices: list[dict[str, Any]] = field(default_factory=list)  # to the agents that said hello


class Translator(Protocol):
    def output(self, kind: str, data: bytes) -> Step:
        """A chunk of stdout or stderr (b"" once that stream has ended)."""

    def input(self, data: str) -> Step:
        """Input the agent sent for the sandbox (a session's requests)."""

    def running(self) -> list[Event]:
        """Events for the moment the sandbox's program started."""

    def ended(self, outcome: Outcome) -> list[Event]:
        """Events after the sandbox's end, before the holder records its outcome."""

    def state(self) -> dict[str, Any]:
        """What an agent that says hello needs to know to take over (a session's running cell)."""


class TextOutput:
    """A job's output: text events, capped at the spec's `max_output_bytes` (0: no cap)."""

    def __init__(self, spec: SandboxSpec) -> None:
        self.cap = spec.max_output_bytes
        self.decoders = {kind: codecs.getincrementaldecoder("utf-8")(errors="replace") for kind in ("stdout", "stderr")}
        self.bytes = 0
        self.cut = False

    def output(self, kind: str, data: bytes) -> Step:
        """One event per read, however many lines it holds; a read that crosses the cap keeps its
        bytes up to the cap exactly, then the note comes once."""
        if self.cut:
            return Step()
        over = bool(self.cap) and self.bytes + len(data) > self.cap
        if over:
            data = data[:self.cap - self.bytes]
        self.bytes += len(data)
        text = self.decoders[kind].decode(data, final=over or not data)
        events = [{"type": kind, "data": text}] if text else []
        if over:
            self.cut = True
            events.append({"type": "stderr", "data": f"[joblet] output beyond {self.cap >> 20} MB is not kept\n"})
        return Step(events)

    def input(self, data: str) -> Step:
        return Step(stdin=data.encode())

    def running(self) -> list[Event]:
        return [{"type": "status", "status": "RUNNING"}]

    def ended(self, outcome: Outcome) -> list[Event]:
        return []

    def state(self) -> dict[str, Any]:
        return {}


TRANSLATORS: dict[str, Callable[[SandboxSpec], Translator]] = {"text": TextOutput}
"""Translators by name; a layer above the sandbox adds its own when the launcher starts."""


def translator_for(spec: SandboxSpec) -> Translator:
    try:
        return TRANSLATORS[spec.output](spec)
    except KeyError:
        raise ValueError(f"no output translator {spec.output!r} in this launcher") from None

"""A session's runner seen from its holder: the `session` output translator (sandbox/output.py).

A session's sandbox is held like a job's (sandbox/holder.py), so its variables outlive the agent.
Its holder runs this translator: the agent's requests (execute, complete) come in as input and wait
here until the runner is free, one cell at a time, so an interrupt reaches the running cell only;
the runner's frames become the session's events (`protocol.translate`, with the cell number this
translator gave the runner, never the frame's), written into the session's log by the holder;
what the agent must know (ready, a cell started or ended, a completion) goes to it as notices.
An agent that comes back asks for `state()` in its hello. The launcher imports this module when
the agent names it (`--translator`), which registers it.
"""

from __future__ import annotations

import codecs
import collections
import json
from typing import Any

from . import protocol
from ..sandbox.outcome import Outcome
from ..sandbox.output import TRANSLATORS, Event, Step
from ..sandbox.spec import SandboxSpec

NAME = "session"
EMPTY_COMPLETION = {"matches": [], "cursor_start": 0, "cursor_end": 0}


class SessionOutput:
    def __init__(self, spec: SandboxSpec) -> None:
        self.max_outputs = int(spec.output_options.get("max_outputs_bytes", 16 << 20))
        self.max_output_mb = int(spec.output_options.get("max_output_mb", 64))
        self.cell_bytes = 0               # output of the running cell kept so far
        self.cut = False                  # its output went over max_output_mb
        self.splitter = protocol.FrameSplitter()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.queue: collections.deque[tuple[int, bytes]] = collections.deque()
        self.active: int | None = None     # the cell the runner has now
        self.last_cell = 0
        self.ready = False

    @property
    def cell(self) -> int:
        """The cell output belongs to: the running one, or between cells the last one."""
        return self.active if self.active is not None else self.last_cell

    def input(self, data: str) -> Step:
        try:
            request = json.loads(data)
            op = request["op"]
        except (ValueError, KeyError, TypeError):
            return Step()
        if op == "execute":
            self.queue.append((int(request["cell"]), data.encode() if data.endswith("\n") else (data + "\n").encode()))
            return self._release()
        if op == "complete" and self.active is None and not self.queue and self.ready:
            return Step(stdin=(data if data.endswith("\n") else data + "\n").encode())
        if op == "complete":
            return Step(notices=[{"completion": {"id": request.get("id"), **EMPTY_COMPLETION}}])
        return Step()

    def running(self) -> list[Event]:
        return []  # READY comes with the runner's first frame

    def _release(self) -> Step:
        """The next queued cell goes to the runner once it is free."""
        if self.active is not None or not self.queue:
            return Step()
        cell, line = self.queue.popleft()
        self.active = self.last_cell = cell
        return Step(stdin=line, notices=[{"cell_started": cell}])

    def output(self, kind: str, data: bytes) -> Step:
        if kind != "stdout":
            text = self.decoder.decode(data, final=not data)  # the interpreter's own (a crash)
            return Step([{"cell": self.cell, "type": "stderr", "data": text}] if text else [])
        step = Step()
        for frame in self.splitter.feed(data):
            out = protocol.translate(frame, self.cell, self.max_outputs)
            for event in out.events:
                if self._keep(event, step):
                    step.events.append(event)
            if out.ready and not self.ready:
                self.ready = True
                step.notices.append({"ready": True})
            if out.completion is not None:
                step.notices.append({"completion": out.completion})
            if out.cell_done is not None and self.active is not None:
                step.notices.append({"cell_done": self.active, "status": out.cell_done})
                self.active = None
                following = self._release()
                step.stdin += following.stdin
                step.notices += following.notices
        return step

    def _keep(self, event: Event, step: Step) -> bool:
        """A cell's output is kept up to `max_output_mb`, as a job's is; the rest is dropped with
        a note (the runner is still read, so it never blocks)."""
        if event["type"] == "cell_start":
            self.cell_bytes, self.cut = 0, False
        if event["type"] not in ("stdout", "stderr", "display", "result"):
            return True
        data = event["data"]
        self.cell_bytes += len(data) if isinstance(data, str) else sum(len(v) for v in data.values())
        if self.cell_bytes <= self.max_output_mb << 20:
            return True
        if not self.cut:
            self.cut = True
            step.events.append({"cell": event["cell"], "type": "stderr",
                                "data": f"[joblet] output beyond {self.max_output_mb} MB of this cell is not kept\n"})
        return False

    def ended(self, outcome: Outcome) -> list[Event]:
        """The cell that was running when the sandbox ended ends with an error that says why."""
        if self.active is None:
            return []
        reason = session_reason(outcome)
        return [{"cell": self.active, "type": "error", "ename": "SessionEnded",
                 "evalue": f"the session ended while this cell ran (reason {reason})", "traceback": []},
                {"cell": self.active, "type": "cell_end", "status": "error"}]

    def state(self) -> dict[str, Any]:
        return {"running": self.active, "last_cell": self.last_cell, "queued": [c for c, _ in self.queue],
                "ready": self.ready}


def session_reason(outcome: Outcome | None, verdict_reason: str | None = None) -> str:
    """Why a session's sandbox ended, in the session's words (API.md: deleted, idle, oom, timeout,
    exit, lost): the agent's reason for ending it, else the kernel's, else the runner's own exit."""
    if outcome is None:
        return "lost"
    if outcome.stop_reason in ("deleted", "idle", "lost", "timeout"):
        return outcome.stop_reason
    if outcome.oom or verdict_reason == "oom":
        return "oom"
    return "exit"


TRANSLATORS[NAME] = SessionOutput

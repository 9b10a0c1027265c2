"""The runner's frames and the session events of API.md, translated both ways without any I/O.

Whatever carries the frames (a local sandbox's pipes today, a Slurm step's stdout or a job's
holder later) feeds bytes to a `FrameSplitter` and each frame to `translate`. Every frame is
hostile data: it comes from a process that runs the user's code, which can write to the runner's
channel itself. So the cell number is the agent's, not the frame's; fields are checked, copied by
name and bounded; display data passes the untrusted-output filter; bad frames become a note.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from joblet_nb.core.untrusted import filter_bundle

MAX_FRAME_BYTES = 48 << 20          # a frame longer than this is dropped (a PNG of a huge figure fits)
MAX_TEXT = 1 << 20                  # evalue, each traceback entry
MAX_TRACEBACK = 500                 # traceback entries
MAX_MATCHES = 1000
CELL_STATUSES = ("ok", "error", "interrupted")


def execute_request(cell: int, code: str, inputs: dict[str, Any] | None = None,
                    outputs: list[str] | None = None) -> bytes:
    """The frame that runs one cell."""
    return _frame({"op": "execute", "cell": cell, "code": code, "inputs": inputs or {},
                   "outputs": outputs or []})


def complete_request(request_id: int, code: str, cursor_pos: int) -> bytes:
    return _frame({"op": "complete", "id": request_id, "code": code, "cursor_pos": cursor_pos})


def _frame(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


class FrameSplitter:
    """Bytes from the runner's channel -> frames (dicts), one per line, each at most
    MAX_FRAME_BYTES; a longer or unreadable line becomes a `protocol_error` frame."""

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.max_bytes:
                    if not self._skipping:
                        frames.append(_problem(f"a frame over {self.max_bytes >> 20} MB was dropped"))
                    self._skipping = True
                    self._buffer.clear()
                return frames
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if self._skipping:
                self._skipping = False  # the rest of the dropped frame
                continue
            if line.strip():
                frames.append(_parse(line))


def _parse(line: bytes) -> dict[str, Any]:
    try:
        frame = json.loads(line)
    except ValueError:
        return _problem("a frame that is not JSON was dropped")
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        return _problem("a frame without a type was dropped")
    return frame


def _problem(message: str) -> dict[str, Any]:
    return {"type": "protocol_error", "message": message}


@dataclass
class Translated:
    """What one frame means: events to log, and what the session learns from it."""

    events: list[dict[str, Any]] = field(default_factory=list)
    ready: bool = False                        # the runner is up
    cell_done: str | None = None               # the running cell ended, with this status
    completion: dict[str, Any] | None = None   # an answer to a complete request (with its id)


def translate(frame: dict[str, Any], cell: int, max_outputs_bytes: int = 16 << 20) -> Translated:
    """One runner frame -> session events of `cell` (the agent's count, never the frame's)."""
    kind = frame.get("type")
    if kind == "ready":
        return Translated(ready=True)
    if kind == "cell_start":
        return Translated([{"cell": cell, "type": "cell_start"}])
    if kind in ("stdout", "stderr"):
        data = frame.get("data")
        return Translated([{"cell": cell, "type": kind, "data": data}] if isinstance(data, str) and data else [])
    if kind in ("display", "result"):
        return Translated([{"cell": cell, "type": kind, "data": filter_bundle(frame.get("data"))}])
    if kind == "error":
        return Translated([_error(frame, cell)])
    if kind == "cell_end":
        status = frame.get("status") if frame.get("status") in CELL_STATUSES else "error"
        return Translated([_cell_end(frame, cell, status, max_outputs_bytes)], cell_done=status)
    if kind == "completion":
        return Translated(completion=_completion(frame))
    message = frame.get("message") if kind == "protocol_error" else f"a frame of unknown type {str(kind)[:40]!r}"
    return Translated([{"cell": cell, "type": "stderr", "data": f"[joblet] session runner: {_text(message)}\n"}])


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    return (value if isinstance(value, str) else "" if value is None else str(value))[:limit]


def _error(frame: dict[str, Any], cell: int) -> dict[str, Any]:
    tb = frame.get("traceback")
    lines = [_text(line) for line in tb[:MAX_TRACEBACK]] if isinstance(tb, list) else []
    return {"cell": cell, "type": "error", "ename": _text(frame.get("ename"), 200) or "Error",
            "evalue": _text(frame.get("evalue")), "traceback": lines}


def _cell_end(frame: dict[str, Any], cell: int, status: str, max_bytes: int) -> dict[str, Any]:
    event: dict[str, Any] = {"cell": cell, "type": "cell_end", "status": status}
    outputs = frame.get("outputs")
    if status != "ok" or not isinstance(outputs, dict):
        return event
    size = len(json.dumps(outputs, separators=(",", ":")).encode())
    if size > max_bytes:
        event.update(outputs={}, error=f"outputs are {size} bytes; the limit is {max_bytes}")
        return event
    event["outputs"] = outputs
    missing, errors = frame.get("missing"), frame.get("errors")
    if isinstance(missing, list) and missing:
        event["missing"] = [_text(name, 200) for name in missing[:256]]
    if isinstance(errors, dict) and errors:
        event["errors"] = {_text(k, 200): _text(v, 2000) for k, v in list(errors.items())[:256]}
    return event


def _completion(frame: dict[str, Any]) -> dict[str, Any]:
    matches = frame.get("matches")
    words = [m for m in matches[:MAX_MATCHES] if isinstance(m, str) and len(m) < 1000] \
        if isinstance(matches, list) else []
    start, end = frame.get("cursor_start"), frame.get("cursor_end")
    return {"id": frame.get("id"), "matches": words,
            "cursor_start": start if isinstance(start, int) else 0,
            "cursor_end": end if isinstance(end, int) else 0}

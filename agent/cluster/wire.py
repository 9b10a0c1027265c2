"""What travels over a Slurm step's stdin and stdout between the agent and the node side.

stdin, agent -> node: one header line `{"v": 1, "bytes": N, "mac": HEX}`, then exactly N bytes of
the payload (JSON), then, for a session, NDJSON frames:
  in       {"b": BASE64}           bytes for the sandbox's stdin (the runner's requests)
  signal   {"sig": N}              a signal for the program (SIGINT: a cell's interrupt)

stdout, node -> agent: NDJSON frames, one a line, each an object with a kind `k`:
  hello    {"node", "slurm_job_id", "gpus": [indices], "devices": [names]}  the node took the job
  status   {"event": {...}}        a status event of the sandbox (started, running, exit, ...)
  out      {"s": "stdout"|"stderr", "d": TEXT}
  file     {"p": RELATIVE, "m": MODE, "d": BASE64, "end": BOOL}   a piece of a file left in /work
  end      {"usage": {...}, "oom": BOOL, "stop": null|"stopped"|"timeout", "message": TEXT|null}
  refused  {"message": TEXT}       the node side refused the job before making anything

The agent trusts none of it beyond its shape: every line is bounded (MAX_FRAME), every field is
checked here, a frame of an unknown kind or shape ends the job, and no frame can name a path the
agent follows (file paths are relative names written beneath the job's own folder, no-follow).
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

from . import signing

VERSION = 1
MAX_HEADER = 512
MAX_PAYLOAD = 1 << 30          # uploads ride in the payload; the API bounds them far below this
MAX_FRAME = 1 << 20            # one frame line; output and file pieces are cut well below it
OUT_CHUNK = 32 << 10           # bytes of output per `out` frame (JSON escapes may grow it 6x)
FILE_CHUNK = 48 << 10          # bytes of a file per `file` frame (base64 grows it 4/3)
STOPS = (None, "stopped", "timeout")


class SpecRefused(Exception):
    """The node side refuses what it was given: no valid header, wrong size, or a bad MAC."""


class FrameError(Exception):
    """A frame from the node that the agent does not accept; the job ends with this message."""


def envelope(key: bytes, payload: dict[str, Any]) -> bytes:
    """The bytes the agent writes to the step's stdin before anything else."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    header = {"v": VERSION, "bytes": len(body), "mac": signing.sign(key, body)}
    return json.dumps(header).encode() + b"\n" + body


def read_envelope(stream: BinaryIO, key: bytes) -> dict[str, Any]:
    """The verified payload, read from the step's stdin; nothing past it is consumed."""
    line = stream.readline(MAX_HEADER + 1)
    if not line.endswith(b"\n"):
        raise SpecRefused("no spec header on stdin (the node side runs only as the agent's Slurm step)")
    try:
        header = json.loads(line)
        size, mac = int(header["bytes"]), str(header["mac"])
    except (ValueError, KeyError, TypeError):
        raise SpecRefused("the spec header is not valid") from None
    if header.get("v") != VERSION or not 0 < size <= MAX_PAYLOAD:
        raise SpecRefused(f"unsupported spec version or size ({header.get('v')!r}, {size} bytes)")
    body = _read_exactly(stream, size)
    if not signing.verify(key, body, mac):
        raise SpecRefused("the spec's MAC does not verify with this node's cluster key")
    payload = json.loads(body)
    if not isinstance(payload, dict):
        raise SpecRefused("the spec is not an object")
    return payload


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    parts, left = [], size
    while left:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise SpecRefused(f"the spec ended {left} bytes early")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def frame(kind: str, **fields: Any) -> bytes:
    return json.dumps({"k": kind, **fields}, separators=(",", ":")).encode() + b"\n"


class FrameReader:
    """Splits a stream into checked frames; holds at most MAX_FRAME bytes between calls."""

    def __init__(self, shapes: dict[str, dict[str, type]] | None = None) -> None:
        self._buf = bytearray()
        self.shapes = SHAPES if shapes is None else shapes

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        frames = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if line.strip():
                frames.append(check(line, self.shapes))
        if len(self._buf) > MAX_FRAME:
            raise FrameError(f"the node sent a line longer than {MAX_FRAME} bytes")
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


def _is(value: Any, kind: type) -> bool:
    """isinstance, except that a JSON true/false is not a number."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


SHAPES: dict[str, dict[str, type]] = {
    "hello": {"node": str, "slurm_job_id": str, "gpus": list, "devices": list},
    "status": {"event": dict},
    "out": {"s": str, "d": str},
    "file": {"p": str, "m": int, "d": str, "end": bool},
    "end": {"usage": dict, "oom": bool},
    "refused": {"message": str},
}


INPUT_SHAPES: dict[str, dict[str, type]] = {"in": {"b": str}, "signal": {"sig": int}}


def check(line: bytes, shapes: dict[str, dict[str, type]] = SHAPES) -> dict[str, Any]:
    """One frame, or FrameError naming what is wrong with it."""
    if len(line) > MAX_FRAME:
        raise FrameError(f"the node sent a frame longer than {MAX_FRAME} bytes")
    try:
        data = json.loads(line)
    except ValueError:
        raise FrameError(f"the node sent a line that is not JSON: {line[:80]!r}") from None
    kind = data.get("k") if isinstance(data, dict) else None
    shape = shapes.get(kind) if isinstance(kind, str) else None
    if shape is None:
        raise FrameError(f"the node sent a frame of unknown kind {str(kind)[:40]!r}")
    for name, typ in shape.items():
        if not _is(data.get(name), typ):
            raise FrameError(f"the node sent a {kind} frame without a valid {name!r}")
    if kind == "out" and data["s"] not in ("stdout", "stderr"):
        raise FrameError("the node sent output of an unknown stream")
    if kind == "end" and data.get("stop") not in STOPS:
        raise FrameError("the node sent an end frame with an unknown stop reason")
    return data

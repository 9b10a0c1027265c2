"""The status channel: typed messages from the sandbox's stage and init to the agent, over a unix
seqpacket socket.

Each message is one JSON line written as one record, so lines from the stage, the init and the
job's pre-exec code never interleave. There is one constructor per kind below; the agent reads them
back with `parse`, and anything else it finds there is `GARBAGE`. `started` carries no PID: it
carries a pidfd of the init (SCM_RIGHTS), opened by stage 1 before the init could be reaped, so
the agent signals the init and enters its namespaces through it and never by a number that may
name another process by then.
"""

from __future__ import annotations

import enum
import json
import os
import socket
from dataclasses import dataclass
from typing import Any

STATUS_FD = 3
GO_FD = 4
MAX_MESSAGE = 3500


class Kind(enum.StrEnum):
    STARTED = "started"                  # stage 1 forked the init (with a pidfd of it attached)
    RUNNING = "running"                  # the init started the job's command (pid: inside the job)
    SETUP_ERROR = "setup_error"          # a sandbox step failed; the message names it
    EXEC_ERROR = "exec_error"            # the job's command could not be started
    EXIT = "exit"                        # the job's command ended
    ARTIFACTS_ERROR = "artifacts_error"  # /work could not be copied out (in full)
    DONE = "done"                        # stage 1 finished its work after the job
    GARBAGE = "garbage"                  # a line that is none of the above


TERMINAL = (Kind.SETUP_ERROR, Kind.EXEC_ERROR, Kind.EXIT)
"""The kinds that say how a job's sandbox ended."""


@dataclass(frozen=True)
class Message:
    kind: Kind
    pid: int | None = None
    message: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    files: int | None = None   # done: the files and folders of /work that were kept
    size: int | None = None    # done: and their bytes
    at: float | None = None             # when, if not now (a job that started while no agent ran)

    def to_dict(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"event": self.kind.value}
        fields.update({k: v for k, v in (("pid", self.pid), ("message", self.message)) if v is not None})
        if self.kind is Kind.EXIT:
            fields.update(exit_code=self.exit_code, signal=self.signal)
        if self.kind is Kind.DONE:
            fields.update(files=self.files, size=self.size)
        return fields

    def to_line(self) -> bytes:
        fields = self.to_dict()
        line = json.dumps(fields)
        if len(line) > MAX_MESSAGE:
            fields["message"] = str(self.message or "")[: MAX_MESSAGE // 2] + " [cut]"
            line = json.dumps(fields)
        return line.encode() + b"\n"


def started() -> Message:
    return Message(Kind.STARTED)


def running(pid: int, at: float | None = None) -> Message:
    return Message(Kind.RUNNING, pid=pid, at=at)


def setup_error(message: str) -> Message:
    return Message(Kind.SETUP_ERROR, message=message)


def exec_error(message: str) -> Message:
    return Message(Kind.EXEC_ERROR, message=message)


def exited(exit_code: int | None, signal: int | None) -> Message:
    return Message(Kind.EXIT, exit_code=exit_code, signal=signal)


def artifacts_error(message: str) -> Message:
    return Message(Kind.ARTIFACTS_ERROR, message=message)


def done(files: int = 0, size: int = 0) -> Message:
    return Message(Kind.DONE, files=files, size=size)


def send(message: Message, fd: int = STATUS_FD) -> None:
    try:
        os.write(fd, message.to_line())
    except OSError:
        pass  # the agent went away; the job's result is lost with it, the job still ends


def take_lines(buffer: bytearray, data: bytes) -> list[Message]:
    """The complete messages in `buffer` followed by `data`; a partial line stays in `buffer`."""
    buffer.extend(data)
    messages = []
    while b"\n" in buffer:
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        messages.append(parse(line))
    return messages


def send_with_descriptor(message: Message, descriptor: int, fd: int = STATUS_FD) -> None:
    """`message` with `descriptor` attached (SCM_RIGHTS): a pidfd for the agent."""
    try:
        with socket.socket(fileno=os.dup(fd)) as channel:
            socket.send_fds(channel, [message.to_line()], [descriptor])
    except OSError:
        pass  # the agent went away, as above


def parse(line: bytes) -> Message:
    """A message back from its line; never raises on what a broken sandbox may have written."""
    try:
        return from_dict(json.loads(line))
    except (ValueError, KeyError, TypeError):
        return Message(Kind.GARBAGE, message=line[:200].decode(errors="replace"))


def from_dict(data: Any) -> Message:
    """A message back from its fields (a node's `status` frame carries them); raises ValueError,
    KeyError or TypeError on anything else."""
    kind = Kind(data["event"])
    return Message(kind, pid=_int(data.get("pid")), message=_text(data.get("message")),
                   exit_code=_int(data.get("exit_code")), signal=_int(data.get("signal")),
                   files=_int(data.get("files")), size=_int(data.get("size")))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)

"""A job's event log as a file with exactly one writer at a time, proven by a lock on the file.

The log is `events.ndjson` (one JSON object a line, `seq` from 1 without gaps). While a job's
holder lives (sandbox/holder.py), the holder writes it and holds `flock(LOCK_EX)` on it for its
whole life; the agent writes only before the holder takes it (a build's first events) and after
the holder is gone (`outputs`, `exit`), taking the same lock without waiting. A log whose lock
cannot be taken is therefore held by a live holder, whatever any record on disk says.

Whoever takes the lock first repairs the tail: a writer killed in the middle of a line leaves a
line without its newline, which is cut off, so every complete line is an event and the next `seq`
is the last complete line's plus one. Each event is written with one `write` on an `O_APPEND`
descriptor. Readers take complete lines only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from typing import Any

import orjson

LOG_NAME = "events.ndjson"
TAIL_WINDOW = 64 << 10


class LogHeld(Exception):
    """The log's lock is held by another writer (a live holder)."""


def encode(seq: int, event: dict[str, Any]) -> bytes:
    """One event as its line: `seq` first, so a reader finds it without parsing the rest."""
    line = {"seq": seq, **event}
    try:
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # orjson refuses what json writes escaped (a lone surrogate in a file name)
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"


class EventFile:
    """An open, locked event log: `append` writes events with the next seqs."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.seq = 0
        self.last: dict[str, Any] | None = None  # the last complete event, after `take`

    @classmethod
    def open(cls, path: str, dir_fd: int | None = None, wait: bool = False) -> "EventFile":
        """Open (creating it) and lock the log; LogHeld if another writer has it and not `wait`."""
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LogHeld(path) from None
            raise
        log = cls(fd)
        log._take()
        return log

    def _take(self) -> None:
        """Cut a torn last line, then learn the last event (and so the next seq)."""
        size = os.fstat(self.fd).st_size
        tail = _tail(self.fd, size)
        end = tail.rfind(b"\n") + 1
        if end < len(tail):
            os.ftruncate(self.fd, size - (len(tail) - end))
        lines = tail[:end].splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        if lines:
            self.last = json.loads(lines[-1])
            self.seq = int(self.last["seq"])

    @property
    def ended(self) -> bool:
        """The log already ends with an `exit` event: nobody writes to it again."""
        return bool(self.last and self.last.get("type") == "exit")

    def append(self, events: list[dict[str, Any]]) -> int:
        """Write events in one write; returns the seq of the last one."""
        if not events:
            return self.seq
        if len(events) == 1:  # a holder's read of output: one event, no copy to join
            data = encode(self.seq + 1, events[0])
        else:
            data = b"".join(encode(self.seq + i + 1, e) for i, e in enumerate(events))
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.seq += len(events)
        self.last = events[-1]
        return self.seq

    def close(self) -> None:
        """Closing the descriptor releases the lock."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def last_event(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last complete event of the log at `path`, read without its lock (nothing is cut)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        tail = _tail(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    lines = [line for line in tail[:tail.rfind(b"\n") + 1].splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def _tail(fd: int, size: int) -> bytes:
    """Enough of the file's end to hold its last complete line (and a torn one after it)."""
    window = TAIL_WINDOW
    while True:
        start = max(0, size - window)
        data = os.pread(fd, size - start, start)
        if start == 0 or data.count(b"\n") >= 2:
            return data
        window *= 4

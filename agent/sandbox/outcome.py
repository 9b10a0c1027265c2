"""How a job's sandbox ended, as its holder recorded it: the facts the agent's verdict is made of.

The holder writes `outcome.json` into the job's state folder (write, rename, and fsync once it
has told the agents) as its last act, so a job that ended while no agent ran still gets its true
verdict when an agent comes back: how the command ended (exit code or signal, or a set-up or exec
error), why it was stopped (a stop, a timeout), whether the kernel's OOM killer acted in its
cgroup, and what it used. The agent's `jobs/verdict.decide` names the verdict from these facts; no
fact is the agent's guess.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..fs import write_first
from .status import Kind, Message

OUTCOME_NAME = "outcome.json"
OUTCOME_TEMPORARY = OUTCOME_NAME + ".tmp"  # written whole first (as holder_end.c; a spare job folder holds it already)


@dataclass
class Outcome:
    end: str | None = None            # status.Kind of the terminal message: exit, setup_error, exec_error
    message: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    stop_reason: str | None = None    # stopped, timeout, ... (the first one asked wins)
    agent_error: str | None = None    # the agent's outside set-up failed (the network): reason setup
    oom: bool = False
    cpu_s: float | None = None
    memory_peak_bytes: int | None = None
    kept_files: int = 0               # what the copy of /work kept: files and folders, and bytes
    kept_bytes: int = 0
    started_at: float | None = None   # the command started (RUNNING)
    ended_at: float | None = None
    marks: dict[str, float] = field(default_factory=dict)  # CLOCK_MONOTONIC at the holder's phases (benchmarks/)

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()

    def take(self, msg: Message) -> None:
        """A terminal message from the sandbox. The first sets the end; a later error replaces it
        (an exec error is followed by the init's exit 127, which does not count), a later exit only
        follows an exit."""
        if msg.kind is not Kind.EXIT:
            self.end, self.message = msg.kind.value, msg.message
        elif self.end in (None, Kind.EXIT.value):
            self.end, self.exit_code, self.signal = Kind.EXIT.value, msg.exit_code, msg.signal

    def write(self, dir_fd: int, durable: bool = True) -> None:
        """Written whole, then renamed into place; with `durable` False the fsync is the caller's
        (`sync`, once the agents know: they read it from the page cache meanwhile)."""
        write_first(OUTCOME_TEMPORARY, json.dumps(asdict(self)).encode(), dir_fd, durable)  # a spare's file, if there
        os.rename(OUTCOME_TEMPORARY, OUTCOME_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    @staticmethod
    def sync(dir_fd: int) -> None:
        fd = os.open(OUTCOME_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def read(cls, folder: str) -> "Outcome | None":
        """The recorded outcome, or None if the holder recorded none (it died, or never ran); any
        other OSError (no descriptor free) is the caller's to retry."""
        try:
            with open(os.path.join(folder, OUTCOME_NAME), "rb") as f:
                data: dict[str, Any] = json.loads(f.read())
        except (FileNotFoundError, ValueError):
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

"""Job folders made ahead of their jobs, off the event loop.

On ext4 that has freed many inodes lately (an agent's own churn: every job's folder goes in the
end), each new inode is searched for past the recently deleted ones: on a busy host a folder and
each of its files cost about a millisecond of CPU, and a job made three of them between its POST
and its start (four before its launch note went into its record file). A spare folder holds them
already, empty: the job's folder is a spare renamed, its record (with the launch note) is written
into its file in place, and its holder locks the log file that is there and writes holder.json and
outcome.json into the temporary files that are there (each is written whole under that name and
renamed: two more new inodes on the job's way to its end otherwise; the holder opens them with
O_CREAT, so a folder made without a spare works as before). Spares are made in a worker thread
once no job has taken one for a moment
(`QUIET_S`): in a burst the thread's inodes would compete with the burst's own jobs for the
cores (and the event loop for the GIL), and enough are kept for a burst of `KEEP` jobs at once
(each job made its folder on the event loop after the first two, about 1 ms of CPU of a trivial
job's 8 there). A burst that uses them up makes its folders itself, as before. A spare holds
nothing of any job.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

from ..eventfile import LOG_NAME
from ..fs import remove_tree
from ..sandbox.control import HOLDER_TEMPORARY
from ..sandbox.outcome import OUTCOME_TEMPORARY

RECORD_NAME = "record.json"
# a job's launch note is in its record file (jobstore.py); the holder's two files are written first
# under their temporary names (holder.py, outcome.py, holder_end.c)
SPARE_FILES = (RECORD_NAME, LOG_NAME, HOLDER_TEMPORARY, OUTCOME_TEMPORARY)
KEEP = 64       # a burst of this many jobs at once finds its folders made
QUIET_S = 0.05  # spares are made once no job has taken one for this long


class SpareFolders:
    def __init__(self, where: Path, keep: int = KEEP) -> None:
        self.where = where
        self.keep = keep
        self.ready: list[Path] = []   # appended by the worker thread, taken on the event loop
        self._making = False
        self._pending: asyncio.TimerHandle | None = None
        self._last_take = 0.0         # monotonic; read by the worker thread too
        self._worker: asyncio.Future[None] | None = None
        self._closed = False          # read by the worker thread too

    def clear(self) -> None:
        """At start: what an earlier life of the agent made and did not use."""
        remove_tree(str(self.where))
        self.where.mkdir(mode=0o700, parents=True)

    def prime(self) -> None:
        """On the event loop, once at start: spares made as soon as the start is quiet, so that the
        first burst after a (re)start finds its folders too (else the first job's take began them)."""
        self._refill()

    def take(self, dest: Path) -> bool:
        """Rename a spare folder to `dest` (True), or False when none is ready (the caller makes
        `dest` itself); either way more are made, off the event loop, once takes pause."""
        self._last_take = time.monotonic()
        taken = False
        while self.ready and not taken:
            try:
                os.rename(self.ready.pop(), dest)
                taken = True
            except OSError:
                continue
        self._refill()
        return taken

    async def close(self) -> None:
        """The agent (or a service in a test) stops: no spare is made from now on, and a worker
        still making them is waited for (it stops before its next folder), so none appears after
        the caller went on to remove the root."""
        self._closed = True
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._worker is not None:
            await asyncio.wait([self._worker])

    def _refill(self) -> None:
        if self._closed or self._making or self._pending is not None or len(self.ready) >= self.keep:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: nothing runs the worker (a tool that starts jobs without one)
        self._pending = loop.call_later(QUIET_S, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """The worker starts once no take came for `QUIET_S`; else this looks again then."""
        wait = self._last_take + QUIET_S - time.monotonic()
        if wait > 0:
            self._pending = loop.call_later(wait, self._start, loop)
            return
        self._pending = None
        self._making = True
        self._worker = loop.run_in_executor(None, self._make)
        self._worker.add_done_callback(self._made)

    def _made(self, done: asyncio.Future[None]) -> None:
        self._making = False
        self._worker = None
        if done.cancelled():
            return
        if done.exception() is not None:
            print(f"joblet-agent: making spare job folders: {done.exception()}", file=sys.stderr)
            return  # the next take tries again
        self._refill()  # a take stopped the worker: on after the next quiet moment

    def _make(self) -> None:
        """In a worker thread: folders (0700) with their empty files (0600), each whole before it
        is offered; it stops when a job takes one meanwhile (a burst began)."""
        while not self._closed and len(self.ready) < self.keep and time.monotonic() - self._last_take >= QUIET_S:
            self._make_one()

    def fill(self, count: int = 1) -> None:
        """Make `count` spares now, on this thread (a tool that starts jobs without an event loop)."""
        for _ in range(count):
            self._make_one()

    def _make_one(self) -> None:
        folder = self.where / secrets.token_hex(8)
        folder.mkdir(mode=0o700)
        for name in SPARE_FILES:
            os.close(os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        self.ready.append(folder)

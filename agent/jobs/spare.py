"""Job folders made ahead of their jobs, off the event loop.

On ext4 that has freed many inodes lately (an agent's own churn: every job's folder goes in the
end), each new inode is searched for past the recently deleted ones: on a busy host a folder and
each of its files cost about a millisecond of CPU, and a job made four of them between its POST
and its start. A spare folder holds them already, empty: the job's folder is a spare renamed, its
record and launch note are written into the files in place, and its holder locks the log file
that is there. Spares are made in a worker thread after a job takes one; a burst that uses them
up makes its folders itself, as before. A spare holds nothing of any job.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from pathlib import Path

from ..cluster.holder_link import LAUNCH_NAME
from ..eventfile import LOG_NAME
from ..fs import remove_tree

RECORD_NAME = "record.json"
SPARE_FILES = (RECORD_NAME, LAUNCH_NAME, LOG_NAME)
KEEP = 2


class SpareFolders:
    def __init__(self, where: Path, keep: int = KEEP) -> None:
        self.where = where
        self.keep = keep
        self.ready: list[Path] = []   # appended by the worker thread, taken on the event loop
        self._making = False

    def clear(self) -> None:
        """At start: what an earlier life of the agent made and did not use."""
        remove_tree(str(self.where))
        self.where.mkdir(mode=0o700, parents=True)

    def take(self, dest: Path) -> bool:
        """Rename a spare folder to `dest` (True), or False when none is ready (the caller makes
        `dest` itself); either way more are made, off the event loop."""
        taken = False
        while self.ready and not taken:
            try:
                os.rename(self.ready.pop(), dest)
                taken = True
            except OSError:
                continue
        self._refill()
        return taken

    def _refill(self) -> None:
        if self._making or len(self.ready) >= self.keep:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: nothing runs the worker (a tool that starts jobs without one)
        self._making = True
        loop.run_in_executor(None, self._make).add_done_callback(self._made)

    def _made(self, done: asyncio.Future[None]) -> None:
        self._making = False
        if not done.cancelled() and done.exception() is not None:
            print(f"joblet-agent: making spare job folders: {done.exception()}", file=sys.stderr)

    def _make(self) -> None:
        """In a worker thread: folders (0700) with their empty files (0600), each whole before it
        is offered."""
        while len(self.ready) < self.keep:
            folder = self.where / secrets.token_hex(8)
            folder.mkdir(mode=0o700)
            for name in SPARE_FILES:
                os.close(os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            self.ready.append(folder)

"""What a job's holder does to its own process and its pipes, once, whichever holder it becomes.

These hold for the C holder too (holder.c): the OOM score and the pipes' size survive its exec.
"""

from __future__ import annotations

import fcntl
import os

HOLDER_OOM_SCORE_ADJ = "-900"  # the job (+1000) goes first, the holder last
PIPE_SIZE = 1 << 20            # the job's stdout and stderr pipes (the default is 64 KiB)


def widen(fd: int) -> None:
    """A large output moves in large reads: fewer wake-ups, events and log writes per megabyte.
    Above fs.pipe-max-size (or the user's pipe quota) the pipe keeps its size."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


def protect_from_oom_kill() -> None:
    """The job's processes (+1000) are the OOM killer's first choice, the holder its last; a host
    that withholds CAP_SYS_RESOURCE (a container) keeps the default for the holder."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(HOLDER_OOM_SCORE_ADJ)
    except PermissionError:
        pass


def quiet_stdio() -> None:
    """0-4 on /dev/null: nothing the holder opens lands there, and no stray write goes anywhere."""
    null = os.open("/dev/null", os.O_RDWR)
    for slot in range(5):
        if slot != null:
            os.dup2(null, slot)
    if null > 4:
        os.close(null)

"""Run a command as PID 1 of a new PID namespace of its own (`python3 pidns.py CMD...`), passing
SIGTERM and SIGINT on to it and leaving with its exit status: a test that needs to choose PIDs in
the namespace an agent lives in (ns_last_pid) gets one no other process of the host shares."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

CLONE_NEWPID = 0x20000000


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWPID) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWPID)")
    child = os.fork()
    if child == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: os.kill(child, signum))
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())

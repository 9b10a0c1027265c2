"""The PID-1 reaper: what a job runs under, so that signals work and zombies do not pile up.

A plain program as PID 1 of a namespace ignores every signal it has no handler for and never
reaps orphans. The reaper forwards the signals a user or the agent sends to the job's process group
and reaps every child until the main one ends; when it exits, the kernel kills whatever is left in
the namespace, daemonised children included.

Once the job's process runs, the init (a Python fork of the launcher) executes `jnb-reaper`
(reaper.c, built by scripts/install.sh) to do this, so that no Python interpreter's pages stay
copied for the job's whole life; the binary is opened before pivot_root and executed by
descriptor. `reap_until` below is what the init does itself should that exec fail.
"""

from __future__ import annotations

import os
import signal
import sys

BINARY = os.path.join(sys.prefix, "libexec", "jnb-reaper")
_binary_fd = -1

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)


def _forwarder(main_pid: int):
    def forward(signum: int, _frame: object) -> None:
        for target in (-main_pid, main_pid):
            try:
                os.kill(target, signum)
            except (ProcessLookupError, PermissionError):
                continue
    return forward


def hold_signals() -> None:
    """Block the forwarded signals from the init's first step on. A PID namespace's init drops
    signals it has no handler for, but a blocked signal stays pending: a stop that comes before the
    handlers exist still reaches the job, as soon as it runs."""
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)


def default_signals() -> None:
    """For the job's own process, before exec: ignored signals and the mask survive execve, and
    this process inherited Python's (SIGPIPE and SIGXFSZ ignored), the launcher's (SIGCHLD) and
    the init's (the held set). The job starts as any program expects: nothing ignored or blocked."""
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                continue  # signals the C library keeps for itself
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def install_forwarding(main_pid: int) -> None:
    handler = _forwarder(main_pid)
    for sig in FORWARDED:
        signal.signal(sig, handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # held signals are forwarded now


def reap_until(main_pid: int) -> int:
    """Reap every child; return the wait status of `main_pid` once it ends."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid == main_pid:
            return status


def open_binary() -> None:
    """In the init, before pivot_root: the reaper binary, from the host, close-on-exec. Without it
    (an install that did not build it: the agent's preflight says so) the init stays the reaper."""
    global _binary_fd
    try:
        _binary_fd = os.open(BINARY, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        _binary_fd = -1


def become_reaper(main_pid: int, status_fd: int) -> None:
    """Execute the reaper in place of this process (the forwarded signals stay blocked across the
    exec: one that comes meanwhile waits for its handler); returns only if there is none or the
    exec failed."""
    if _binary_fd < 0:
        return
    try:
        os.execve(_binary_fd, ["jnb-init", str(main_pid), str(status_fd)], {})
    except OSError:
        return

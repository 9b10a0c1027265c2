"""PID 1 holds no more than it needs at the moment the job's process comes to exist (issue 13,
item 11): not dumpable and down to CAP_KILL plus what the job's process needs to become the job
user, before it forks the job, not after.

A race in a real job cannot show this reliably, so the test watches the fork itself: it traces a
sandbox stage of its own agent that waits for a job (PTRACE_SEIZE with PTRACE_O_TRACEFORK, and
PTRACE_O_TRACEVFORK: the holder spawns jnb-init with posix_spawn, a vfork), follows it into the
init, and when the init forks the job's process, reads the init's capability sets at that very
stop; then it lets every process go (PTRACE_DETACH). Nothing is written to any traced process.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path

import pytest

from agentproc import running_agent
from joblet_agent.sandbox.launcher import POOL_SIZE
from waiting import wait_until

pytestmark = pytest.mark.root

PTRACE_CONT, PTRACE_DETACH, PTRACE_GETEVENTMSG = 7, 17, 0x4201
PTRACE_SEIZE, PTRACE_INTERRUPT = 0x4206, 0x4207
PTRACE_O_TRACEFORK, PTRACE_O_TRACEVFORK, PTRACE_EVENT_FORK, PTRACE_EVENT_STOP = 0x2, 0x4, 1, 128
WALL = 0x40000000
CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP = 5, 6, 7, 8
ALLOWED_AT_FORK = (1 << CAP_KILL) | (1 << CAP_SETGID) | (1 << CAP_SETUID) | (1 << CAP_SETPCAP)

libc = ctypes.CDLL(None, use_errno=True)


def ptrace(request: int, pid: int, data: int = 0) -> int:
    rc = libc.ptrace(ctypes.c_long(request), ctypes.c_long(pid), ctypes.c_long(0), ctypes.c_long(data))
    if rc == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request:#x}, {pid}): {os.strerror(err)}")
    return rc


def event_message(pid: int) -> int:
    value = ctypes.c_ulong()
    libc.ptrace(ctypes.c_long(PTRACE_GETEVENTMSG), ctypes.c_long(pid), None, ctypes.byref(value))
    return value.value


def caps(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {ln.split(":")[0]: int(ln.split()[1], 16) for ln in status if ln.startswith("Cap")}


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("PPid:")).split()[1])


def idle_stages(agent_pid: int) -> list[int]:
    found, todo = [], [agent_pid]
    while todo:
        pid = todo.pop()
        try:
            kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            continue
        todo += kids
        found += [k for k in kids if Path(f"/proc/{k}/comm").read_text().strip() == "jnb-idle-stage"]
    return found


class Tracer:
    """Follows the stages into their init and stops at the init's fork of the job's process."""

    def __init__(self, stages: list[int]) -> None:
        self.stages = set(stages)
        self.traced = set(stages)
        self.inits: set[int] = set()
        self.at_fork: dict[str, int] | None = None
        for pid in stages:
            ptrace(PTRACE_SEIZE, pid, PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK)

    def run(self, timeout: float = 60) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while self.at_fork is None:
            pid, status = os.waitpid(-1, WALL | os.WNOHANG)
            if pid == 0:
                assert time.monotonic() < deadline, "no traced process forked within a minute"
                time.sleep(0.005)
                continue
            self.handle(pid, status)
        return self.at_fork

    def handle(self, pid: int, status: int) -> None:
        if not os.WIFSTOPPED(status):
            self.traced.discard(pid)
            return
        event, sig = status >> 16, os.WSTOPSIG(status)
        if event == PTRACE_EVENT_FORK:
            self.traced.add(event_message(pid))
            if pid in self.inits:  # the init forks the job's process: its state at this moment
                self.at_fork = caps(pid)
            self.detach(pid)
        elif event == PTRACE_EVENT_STOP:  # a new child's first stop (perhaps before its parent's event)
            self.traced.add(pid)
            if _parent(pid) in self.stages:  # an init
                self.inits.add(pid)
                ptrace(PTRACE_CONT, pid)
            else:
                self.detach(pid)  # the job's process: nothing to look at
        else:
            ptrace(PTRACE_CONT, pid, 0 if sig == signal.SIGTRAP else sig)  # pass signals on

    def detach(self, pid: int) -> None:
        ptrace(PTRACE_DETACH, pid)
        self.traced.discard(pid)

    def release(self) -> None:
        """Let every process still traced go: interrupt it, wait for the stop, detach."""
        for pid in list(self.traced):
            try:
                ptrace(PTRACE_INTERRUPT, pid)
                os.waitpid(pid, WALL)
                ptrace(PTRACE_DETACH, pid)
            except (OSError, ChildProcessError):
                pass
        self.traced.clear()


def test_the_init_is_reduced_before_it_forks_the_job() -> None:
    with running_agent() as agent:
        assert agent.proc is not None
        stages = wait_until(lambda: (s := idle_stages(agent.proc.pid)) and len(s) >= POOL_SIZE and s, timeout=30)
        tracer = Tracer(stages)
        try:
            job = agent.api().submit(command=["true"])
            seen = tracer.run()
        finally:
            tracer.release()
        assert agent.api().wait_for_status(job)["status"] == "COMPLETED"
    extra = seen["CapEff"] & ~ALLOWED_AT_FORK
    assert extra == 0, (f"PID 1 held capabilities {extra:#x} beyond CAP_KILL and what the job's process needs "
                        f"(CapEff {seen['CapEff']:#x}, CapBnd {seen['CapBnd']:#x}) when it forked the job")
    assert seen["CapBnd"] & ~ALLOWED_AT_FORK == 0, seen

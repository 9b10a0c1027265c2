"""The launcher's watch over its stages' cgroups: a stage that dies under its stage name leaves none.

A stage makes its cgroup while it waits, under a name the launcher chose (`stage-<hex>`), and its
holder names it after the job (`job-<id>`, what the agent looks for) only once the job's init is
spawned (holder.py: the renames then run beside the init's own work). A holder killed before that,
or a stage that dies while it waits, would leave a cgroup nobody looks for until the agent stops.
So the launcher keeps a pidfd of every stage it forked, until the stage has its job and its
cgroup is no longer under the stage's name (renamed: one stat at each of the launcher's wake-ups),
or until the stage ends: then what is left under the stage's name (an init its death signal is
killing, a job in its namespace) is killed and removed, in a child process, so that no job waits
for it. A launcher that stops (the agent stops) first waits a moment for the holders on their
way to the rename, so that the agent's clean-up of stage cgroups never meets a holder's.
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass

from .cgroups import CgroupDriver, CgroupError
from .libc import close_range, set_process_name

CLEANER_NAME = "jnb-stage-clean"
SETTLE_S = 2.0  # at the launcher's stop: how long holders on their way to the rename are waited for


@dataclass
class Watched:
    name: str
    pidfd: int
    last_dir: str        # its directory in the last hierarchy: renamed last
    taken: bool = False  # it has its job (its cgroup was made before it could take one)


class StageWatch:
    """The stages forked by one launcher, each until it is renamed after its job or has ended."""

    def __init__(self, driver: CgroupDriver) -> None:
        self.driver = driver
        self.by_fd: dict[int, Watched] = {}
        self.by_name: dict[str, Watched] = {}

    def forked(self, pid: int, name: str) -> None:
        """Watch the stage just forked (its pid cannot be reused: it is not reaped before its pidfd
        is open, unless it has ended already)."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._remove_left(name, wait=False)
            return
        watched = Watched(name, pidfd, self.driver.open(name).dirs[-1])
        self.by_fd[pidfd], self.by_name[name] = watched, watched

    def taken(self, name: str) -> None:
        """The stage has its job: it is let go once its cgroup has the job's name."""
        watched = self.by_name.get(name)
        if watched is not None:
            watched.taken = True

    def pidfds(self) -> list[int]:
        return list(self.by_fd)

    def prune(self) -> None:
        """Let go of the stages whose cgroups were renamed after their jobs."""
        for watched in [w for w in self.by_fd.values() if w.taken and not os.path.isdir(w.last_dir)]:
            self._forget(watched)

    def ended(self, pidfds: list[int], wait: bool = False) -> None:
        """These stages have ended: what is left under their stage names goes."""
        for fd in pidfds:
            watched = self.by_fd.get(fd)
            if watched is not None:
                self._forget(watched)
                self._remove_left(watched.name, wait)

    def settle(self, timeout: float = SETTLE_S) -> None:
        """Before the launcher exits: wait (at most `timeout`) for every stage that has its job to
        rename its cgroup or end (then clean up after it here)."""
        deadline = time.monotonic() + timeout
        while True:
            self.prune()
            taken = [w.pidfd for w in self.by_fd.values() if w.taken]
            if not taken or time.monotonic() > deadline:
                break
            self.ended(select.select(taken, [], [], 0.005)[0], wait=True)
        for watched in list(self.by_fd.values()):
            self._forget(watched)

    def _forget(self, watched: Watched) -> None:
        self.by_fd.pop(watched.pidfd, None)
        self.by_name.pop(watched.name, None)
        os.close(watched.pidfd)

    def _remove_left(self, name: str, wait: bool) -> None:
        """The cgroup `name` killed and removed, if it is still there: in a child (the launcher's
        SIGCHLD is ignored: the kernel reaps it), or here if `wait`."""
        cgroup = self.driver.open(name)
        if not any(os.path.isdir(d) for d in cgroup.dirs):
            return
        if not wait:
            if os.fork() != 0:
                return
            close_range(3)  # no socket of the launcher's is held open by the child
            set_process_name(CLEANER_NAME)
        try:
            cgroup.remove()
        except (CgroupError, OSError):
            pass  # left for the agent's clean-up at its stop or start
        finally:
            if not wait:
                os._exit(0)

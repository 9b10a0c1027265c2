"""Identity: who the job runs as, and what it may no longer do.

The order matters: the bounding set can only be dropped while CAP_SETPCAP is held, so it goes
first; then groups, gid and uid; then the remaining sets are cleared explicitly; no_new_privs last,
so that no setuid or file-capability binary can give any of it back.
"""

from __future__ import annotations

import os

from . import libc

CAP_SETGID, CAP_SETUID, CAP_KILL, CAP_SETPCAP = 6, 7, 5, 8
#: what the init still holds when it forks the job: the reaper's CAP_KILL, and what the job's own
#: process needs to become the job user (drop the bounding set, set groups, gid and uid)
FORK_CAPS = frozenset({CAP_KILL, CAP_SETPCAP, CAP_SETGID, CAP_SETUID})


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_bounding_set(keep: frozenset[int] = frozenset()) -> None:
    for cap in range(last_cap() + 1):
        if cap not in keep:
            libc.prctl(libc.PR_CAPBSET_DROP, cap)


def become_job_user(uid: int, gid: int) -> None:
    """Drop to the unprivileged job user with no capabilities in any set, bounding included."""
    if uid == 0 or gid == 0:
        raise ValueError("a job never runs as root")
    drop_bounding_set()
    libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    libc.capset(0, 0, 0)
    set_no_new_privs()


def narrow_for_fork() -> None:
    """Before the init forks the job: not dumpable, no_new_privs, and only FORK_CAPS, so the job's
    process never exists beside a PID 1 that holds more (reduce_reaper takes the rest after)."""
    _keep_only(FORK_CAPS)


def reduce_reaper(keep: frozenset[int] = frozenset({CAP_KILL})) -> None:
    """The PID-1 reaper keeps root's uid (so the job cannot signal or trace it) but only the
    capability it needs to forward signals to the job's processes."""
    _keep_only(keep)


def _keep_only(keep: frozenset[int]) -> None:
    drop_bounding_set(keep)
    mask = sum(1 << cap for cap in keep)
    libc.capset(mask, mask, 0)
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    set_no_new_privs()


def set_no_new_privs() -> None:
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)


def prefer_for_oom_kill() -> None:
    """If the whole host runs out of memory, the kernel kills a job before the agent or anything
    else of the host's (jobs inherit this from the init)."""
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")

"""Namespaces: the set every job gets (its init, init.c, adds the cgroup one and brings lo up)."""

from __future__ import annotations

from . import libc

JOB_NAMESPACES = (
    libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET | libc.CLONE_NEWPID
)
ALL_NAMESPACES = JOB_NAMESPACES | libc.CLONE_NEWCGROUP

AHEAD_NAMESPACES = libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET | libc.CLONE_NEWPID


def enter_job_namespaces(ahead: bool = False) -> None:
    """Unshare mount, UTS, IPC, network and PID namespaces; with `ahead`, all but the mount one.

    A stage prepared before its job (launcher.StagePool) makes the empty ones ahead of time; the
    mount namespace is copied from the host only when the job comes, so that it shows the host's
    mounts as they are then (and never keeps a since-unmounted filesystem alive). The PID
    namespace applies to the children of the caller: the next fork becomes PID 1. The cgroup
    namespace comes later (init.c), once the init is in the job's cgroup, so that
    the job's view of cgroups is rooted there.
    """
    libc.unshare(AHEAD_NAMESPACES if ahead else JOB_NAMESPACES)


def new_mount_namespace() -> None:
    """A copy of the caller's mounts. Stage 1 takes one from the host when its job comes; the init
    (init.c) nests another, so its pivot_root leaves the stage's (which copies /work out afterwards) alone."""
    libc.unshare(libc.CLONE_NEWNS)

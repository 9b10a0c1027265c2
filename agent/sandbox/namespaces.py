"""Namespaces: the set every job gets, and the loopback of its empty network namespace."""

from __future__ import annotations

from . import libc

JOB_NAMESPACES = (
    libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET | libc.CLONE_NEWPID
    | libc.CLONE_NEWCGROUP
)


def enter_job_namespaces() -> None:
    """Unshare mount, UTS, IPC, network, cgroup and PID namespaces.

    The PID namespace applies to the children of the caller: the next fork becomes PID 1.
    """
    libc.unshare(JOB_NAMESPACES)


def private_mount_namespace() -> None:
    """A nested mount namespace for the init, so its pivot_root leaves the outer one (kept by the
    stage that copies /work out afterwards) untouched."""
    libc.unshare(libc.CLONE_NEWNS)


def loopback_up() -> None:
    """Bring `lo` up in the job's fresh network namespace (pyroute2, no `ip` binary)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=index, state="up")

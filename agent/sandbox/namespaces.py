"""Namespaces: the set every job gets, and the loopback of its empty network namespace."""

from __future__ import annotations

from . import libc

import fcntl
import socket
import struct

JOB_NAMESPACES = (
    libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET | libc.CLONE_NEWPID
)
ALL_NAMESPACES = JOB_NAMESPACES | libc.CLONE_NEWCGROUP

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


AHEAD_NAMESPACES = libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET | libc.CLONE_NEWPID


def enter_job_namespaces(ahead: bool = False) -> None:
    """Unshare mount, UTS, IPC, network and PID namespaces; with `ahead`, all but the mount one.

    A stage prepared before its job (launcher.StagePool) makes the empty ones ahead of time; the
    mount namespace is copied from the host only when the job comes, so that it shows the host's
    mounts as they are then (and never keeps a since-unmounted filesystem alive). The PID
    namespace applies to the children of the caller: the next fork becomes PID 1. The cgroup
    namespace comes later (`own_cgroup_namespace`), once the init is in the job's cgroup, so that
    the job's view of cgroups is rooted there.
    """
    libc.unshare(AHEAD_NAMESPACES if ahead else JOB_NAMESPACES)



def own_cgroup_namespace() -> None:
    libc.unshare(libc.CLONE_NEWCGROUP)


def new_mount_namespace() -> None:
    """A copy of the caller's mounts. Stage 1 takes one from the host when its job comes; the init
    nests another, so its pivot_root leaves the stage's (which copies /work out afterwards) alone."""
    libc.unshare(libc.CLONE_NEWNS)


def loopback_up() -> None:
    """Bring `lo` up in the job's fresh network namespace.

    One flag on an interface that already exists: two SIOC[GS]IFFLAGS ioctls take about 0.2 ms,
    where pyroute2's IPRoute (which builds an event loop per instance) took about 15 ms per job in
    a fresh namespace (benchmarks/). The links the agent creates (veth, bridge) use pyroute2.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))

"""Which cgroup backend this host has, found from what is mounted, never assumed; and the disk
I/O limits apply to."""

from __future__ import annotations

import os

from ..mounts import unescape
from . import files
from .base import CgroupDriver
from .files import CgroupError
from .v1 import CgroupV1
from .v2 import CgroupV2


def _v1_mounts(mounts_file: str) -> dict[str, str]:
    """controller -> mount point of each cgroup v1 hierarchy, found by its mount options."""
    out: dict[str, str] = {}
    try:
        with open(mounts_file) as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[2] != "cgroup":
            continue
        point = unescape(fields[1])
        for opt in fields[3].split(","):
            if opt in CgroupV1.needed or opt in CgroupV1.optional:
                out.setdefault(opt, point)
    return out


def detect(
    parent: str, mount_root: str = "/sys/fs/cgroup", mounts_file: str = "/proc/self/mounts"
) -> CgroupDriver:
    """Pick the backend that actually holds the controllers: v2 if complete, else v1 if mounted.

    When neither is complete the closer one is returned so that missing() can explain the refusal.
    """
    v2 = None
    if os.path.exists(os.path.join(mount_root, "cgroup.controllers")):
        v2 = CgroupV2(parent, mount_root)
    if v2 is not None and not v2.missing():
        return v2
    mounts = _v1_mounts(mounts_file)
    if mounts:
        v1 = CgroupV1(parent, mounts)
        if v2 is None or not v1.missing():
            return v1
    if v2 is not None:
        return v2
    raise CgroupError(
        f"no cgroup filesystem: no {mount_root}/cgroup.controllers, "
        f"and no cgroup v1 mounts in {mounts_file}"
    )


def whole_disk_of(path: str, sysfs: str = "/sys") -> tuple[int, int] | None:
    """(major, minor) of the whole disk behind path's filesystem; None if no block device.

    I/O throttling is set per whole disk (v1 refuses partitions), and tmpfs, overlay or btrfs
    subvolumes have anonymous device numbers with no block device to throttle.
    """
    dev = os.stat(path).st_dev
    node = os.path.join(sysfs, "dev", "block", f"{os.major(dev)}:{os.minor(dev)}")
    if not os.path.exists(node):
        return None
    real = os.path.realpath(node)
    if os.path.exists(os.path.join(real, "partition")):
        real = os.path.dirname(real)  # a partition's sysfs directory sits inside its disk's
    major, minor = files.read(os.path.join(real, "dev")).strip().split(":")
    return int(major), int(minor)

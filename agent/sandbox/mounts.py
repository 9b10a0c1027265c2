"""Mounts: a job's private mount namespace and its size-bounded tmpfs root, and what the root's
/dev and /proc hold.

The order follows bubblewrap: private propagation and the tmpfs root (here, in stage 1), binds and
dev (rootfs.py's records, which jnb-init applies: init_root.c), then proc, pivot_root, detach the
old root and the root itself read-only (init.c).
"""

from __future__ import annotations

import os
import re
import stat

from . import libc
from .libc import MS_NODEV, MS_NOSUID, MS_PRIVATE, MS_REC

# /proc entries that leak host state or accept dangerous writes: files get /dev/null bound over
# them, directories get an empty read-only tmpfs (the set Docker and runc mask by default); the
# init mounts the job's procfs and applies these (initplan.py hands them to init.c).
PROC_MASKED_FILES = (
    "kcore", "keys", "timer_list", "sched_debug", "sysrq-trigger", "kallsyms", "latency_stats",
    "timer_stats", "config.gz", "kmsg", "kpagecount", "kpageflags", "kpagecgroup", "mtrr",
    "1/cmdline",  # the init's command line is `jnb-init` alone; masked all the same
)
PROC_MASKED_DIRS = ("acpi", "scsi", "asound", "firmware", "driver")
PROC_READONLY = ("sys", "irq", "bus", "fs")  # bound onto themselves read-only

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}


def unescape(field: str) -> str:
    """The kernel's mount tables (mountinfo, mounts) escape space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: str) -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) for `path` and every mount below it, parents first."""
    path = os.path.normpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = unescape(fields[4])
            if point == path or point.startswith(path.rstrip("/") + "/"):
                found.append((point, set(fields[5].split(","))))
    return found


def make_private() -> None:
    """Nothing this namespace mounts may propagate back to the host."""
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)


INODES_PER_MB = 256  # 4 KiB a file on average; bounds inode (kernel memory) use, not just bytes


def mount_tmpfs(target: str, size_mb: int, mode: int = 0o755, flags: int = MS_NOSUID | MS_NODEV) -> None:
    """A tmpfs bounded in bytes and in inodes, so neither a disk fill nor an inode flood reaches
    the host's memory beyond the job's share."""
    inodes = max(1024, size_mb * INODES_PER_MB)
    libc.mount("tmpfs", target, "tmpfs", flags, f"size={size_mb}m,nr_inodes={inodes},mode={mode:o}")


PTY_DEVICES = (("c", 5, 2),) + tuple(("c", major, -1) for major in range(136, 144))  # ptmx, pty slaves


def device_allowlist(devices: list[str] | tuple[str, ...] = ()) -> tuple[tuple[str, int, int], ...]:
    """The device numbers a job's /dev holds (rootfs.dev): the harmless host nodes, its own devpts,
    and the `devices` it was given; the device cgroup allows these and nothing else."""
    allowed: list[tuple[str, int, int]] = list(PTY_DEVICES)
    for path in [f"/dev/{name}" for name in DEV_NODES] + list(devices):
        st = os.stat(path)
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else None
        if kind is None:
            raise ValueError(f"{path} is not a device node")
        allowed.append((kind, os.major(st.st_rdev), os.minor(st.st_rdev)))
    return tuple(dict.fromkeys(allowed))

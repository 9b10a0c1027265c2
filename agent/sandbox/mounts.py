"""Mounts: build a job's root on a size-bounded tmpfs, which the job's init enters with pivot_root.

Every bind is nosuid,nodev; read-only binds are remounted read-only submount by submount (a
recursive bind alone leaves submounts writable). The order follows bubblewrap: private propagation,
tmpfs root, binds and dev (here), then proc, pivot_root, detach the old root and the root itself
read-only (init.c).
"""

from __future__ import annotations

import os
import re
import stat

from . import libc
from .libc import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT

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


class MountTable:
    """The mount points as they are when the init starts building, read once per job, so that a
    bind of a tree without submounts needs no re-read of /proc/self/mountinfo."""

    def __init__(self) -> None:
        self.entries = mounts_under("/")

    def has_submounts(self, source: str) -> bool:
        prefix = os.path.realpath(source).rstrip("/") + "/"
        return any(point.startswith(prefix) for point, _ in self.entries)

    def options_of(self, source: str) -> set[str]:
        """The options of the mount that holds `source` (the longest mount point above it)."""
        real = os.path.realpath(source)
        best, options = "", set()
        for point, opts in self.entries:
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, options = point, opts
        return options


def make_private() -> None:
    """Nothing this namespace mounts may propagate back to the host."""
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)


INODES_PER_MB = 256  # 4 KiB a file on average; bounds inode (kernel memory) use, not just bytes


def mount_tmpfs(target: str, size_mb: int, mode: int = 0o755, flags: int = MS_NOSUID | MS_NODEV) -> None:
    """A tmpfs bounded in bytes and in inodes, so neither a disk fill nor an inode flood reaches
    the host's memory beyond the job's share."""
    inodes = max(1024, size_mb * INODES_PER_MB)
    libc.mount("tmpfs", target, "tmpfs", flags, f"size={size_mb}m,nr_inodes={inodes},mode={mode:o}")


def remount(target: str, flags: int) -> None:
    libc.mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def _flags_of(options: set[str]) -> int:
    flags = 0
    if "noexec" in options:
        flags |= MS_NOEXEC
    return flags


def bind(source: str, target: str, readonly: bool, table: MountTable | None = None) -> None:
    """Bind `source` (with submounts) and make every mount of it nosuid,nodev (+ro if asked).

    With a `table` that shows no submount below `source`, the bind is one mount and is remounted
    directly; otherwise every mount below `target` is found and remounted one by one.
    """
    libc.mount(source, target, None, MS_BIND | MS_REC)
    extra = MS_NOSUID | MS_NODEV | (MS_RDONLY if readonly else 0)
    if table is not None and not table.has_submounts(source):
        remount(target, extra | _flags_of(table.options_of(source)))
        return
    for point, options in mounts_under(target):
        remount(point, extra | _flags_of(options))


def bind_self(path: str) -> None:
    """Make a directory of the root tmpfs its own writable mount, so it stays writable when the root
    is remounted read-only."""
    libc.mount(path, path, None, MS_BIND)
    remount(path, MS_NOSUID | MS_NODEV)


def mount_dev(root: str, shm_mb: int, devices: list[str] | tuple[str, ...] = ()) -> None:
    """A tmpfs /dev (nodev itself) holding binds of a handful of harmless host nodes, and of the
    `devices` the job was given (the GPUs Slurm allocated), each under its own name."""
    dev = os.path.join(root, "dev")
    libc.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=755")
    for name in DEV_NODES:
        _bind_node(f"/dev/{name}", os.path.join(dev, name))
    for source in devices:
        name = os.path.basename(source)
        if name in DEV_NODES or name in DEV_LINKS or name in ("pts", "shm", "") or name.startswith("."):
            raise ValueError(f"device {source}: its name {name!r} is taken in /dev")
        if not stat.S_ISCHR(os.stat(source).st_mode):
            raise ValueError(f"device {source} is not a character device")
        _bind_node(source, os.path.join(dev, name))
    for name, link in DEV_LINKS.items():
        os.symlink(link, os.path.join(dev, name))
    os.mkdir(os.path.join(dev, "pts"))
    libc.mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=0620")
    os.mkdir(os.path.join(dev, "shm"))
    mount_tmpfs(os.path.join(dev, "shm"), shm_mb, 0o1777, MS_NOSUID | MS_NODEV | MS_NOEXEC)
    remount(dev, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


PTY_DEVICES = (("c", 5, 2),) + tuple(("c", major, -1) for major in range(136, 144))  # ptmx, pty slaves


def device_allowlist(devices: list[str] | tuple[str, ...] = ()) -> tuple[tuple[str, int, int], ...]:
    """The device numbers a job's /dev holds (mount_dev): the harmless host nodes, its own devpts,
    and the `devices` it was given; the device cgroup allows these and nothing else."""
    allowed: list[tuple[str, int, int]] = list(PTY_DEVICES)
    for path in [f"/dev/{name}" for name in DEV_NODES] + list(devices):
        st = os.stat(path)
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else None
        if kind is None:
            raise ValueError(f"{path} is not a device node")
        allowed.append((kind, os.major(st.st_rdev), os.minor(st.st_rdev)))
    return tuple(dict.fromkeys(allowed))


def _bind_node(source: str, target: str) -> None:
    """One device node bound in: the bind keeps it usable (no nodev), never executable or setuid."""
    open(target, "x").close()
    libc.mount(source, target, None, MS_BIND)
    remount(target, MS_NOSUID | MS_NOEXEC)


def mkdirs_beneath(root: str, relative: str, mode: int = 0o755) -> str:
    """Create `relative` below `root` one component at a time, refusing symlinks on the way.

    Used for mount targets inside a root that only this init has written to so far; the check is
    the belt to that brace.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in [p for p in relative.split("/") if p]:
            if part in (".", ".."):
                raise ValueError(f"mount target {relative!r} must not contain '.' or '..'")
            try:
                os.mkdir(part, mode, dir_fd=fd)
            except FileExistsError:
                pass
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)
    return os.path.join(root, relative.lstrip("/"))

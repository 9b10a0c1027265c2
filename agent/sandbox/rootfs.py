"""The job's root filesystem, laid out on its tmpfs before pivot_root (nsjail's mnt.cc).

Read-only system binds, fresh /etc copies, the runtime's mounts, masks over host secrets, the
uploads in /work, then dev; every path below the root is walked without following links. It runs
in the job's stage (its mount namespace is the job's own); /proc is the init's (init.c), as only
PID 1 of the job's PID namespace can mount that namespace's procfs.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

from ..fs import UnsafePath, open_source, write_beneath
from . import mounts
from .spec import Mount, SandboxSpec


def build_root(spec: SandboxSpec) -> None:
    """Lay out the job's root on its tmpfs: read-only system binds, /etc copies, /work, /tmp,
    runtime mounts, masks, uploads and dev; an empty /proc for the init to mount."""
    root = spec.root_dir
    table = mounts.MountTable()
    for name in ("usr", "etc", "work", "tmp", "proc", "dev"):
        os.mkdir(os.path.join(root, name), 0o755)
    system_usr(root, spec.system, table)
    for name, content in spec.etc_files.items():
        write_beneath(os.path.join(root, "etc"), name, content.encode(), 0o644)
    for m in spec.mounts:
        bind_mount(root, m, table)
    for path in spec.masks:
        target = os.path.join(root, path.lstrip("/"))
        if os.path.isdir(target):
            mounts.mount_tmpfs(target, 1, 0o755)
            mounts.remount(target, mounts.MS_RDONLY | mounts.MS_NOSUID | mounts.MS_NODEV)
        elif os.path.exists(target):
            mounts.bind("/dev/null", target, readonly=True)
    work, tmp = os.path.join(root, "work"), os.path.join(root, "tmp")
    os.chown(work, spec.uid, spec.gid)
    os.chmod(tmp, 0o1777)
    for up in spec.uploads:
        write_beneath(work, up.path, up.content, up.mode, owner=(spec.uid, spec.gid))
    mounts.bind_self(work)
    mounts.bind_self(tmp)
    mounts.mount_dev(root, spec.shm_mb, spec.devices)


def system_usr(root: str, system: Mount | None, table: mounts.MountTable) -> None:
    """The job's /usr: a built base image (merged /usr: /bin, /sbin, /lib and /lib64 are links
    into it, as on Debian 12), or with `system` None the host's /usr and /bin, /lib... as the host has them."""
    if system is not None:
        with bind_source(system) as (source, _):
            mounts.bind(source, os.path.join(root, "usr"), readonly=True, table=table)
        for name in ("bin", "sbin", "lib", "lib64"):
            os.symlink(f"usr/{name}", os.path.join(root, name))
        return
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), os.path.join(root, name))
        elif os.path.isdir(host):
            os.mkdir(os.path.join(root, name), 0o755)
            mounts.bind(host, os.path.join(root, name), readonly=True, table=table)
    mounts.bind("/usr", os.path.join(root, "usr"), readonly=True, table=table)


def bind_mount(root: str, m: Mount, table: mounts.MountTable) -> None:
    """One bind of `spec.mounts`, from what `bind_source` resolved."""
    with bind_source(m) as (source, is_dir):
        target = mounts.mkdirs_beneath(root, m.target) if is_dir else _file_target(root, m.target)
        mounts.bind(source, target, readonly=m.readonly, table=table)


@contextlib.contextmanager
def bind_source(m: Mount) -> Iterator[tuple[str, bool]]:
    """(what to bind, whether it is a folder). A source `beneath` a folder (a runtime's or the base
    image's `isolated/` tree) is opened with openat2, beneath it and through no symlink, and bound
    from that descriptor: the bind gets what was resolved, whatever the tree holds by the time
    mount(2) looks at the path. Other sources are host paths the agent chose."""
    if m.beneath is None:
        yield m.source, os.path.isdir(m.source)
        return
    try:
        fd = open_source(m.beneath, m.source)
    except (OSError, UnsafePath) as exc:
        raise RuntimeError(f"runtime mount source {m.source!r}: {exc}") from None
    try:
        yield f"/proc/self/fd/{fd}", stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _file_target(root: str, target: str) -> str:
    parent, _, name = target.strip("/").rpartition("/")
    directory = mounts.mkdirs_beneath(root, parent) if parent else root
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        open(path, "x").close()
    return path

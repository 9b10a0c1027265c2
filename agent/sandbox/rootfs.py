"""The job's root filesystem as records of jnb-init's plan (nsjail's mnt.cc, bubblewrap's order).

Python decides, C applies: this module turns the spec into root records (folders, links, binds,
files with their mode and owner, masks, device nodes, new filesystems), checking here everything
that needs no filesystem; jnb-init (init_root.c) applies them in order on the job's tmpfs, in the
holder's mount namespace, before it nests its own, walking every path below the root without
following links and opening a `beneath` source with openat2. Read-only system binds, fresh /etc
copies, /work and /tmp, the runtime's mounts, masks over host secrets, the uploads, then /dev;
/proc is the init's too (only PID 1 of the job's PID namespace can mount that namespace's procfs).
"""

from __future__ import annotations

import struct

from ..fs import UnsafePath, split_relative
from . import mounts
from .spec import Mount, SandboxSpec

# the records (init.h has the same numbers, after initplan.py's)
MKDIR, SYMLINK, BIND, HOST, WRITE, MASK, FS, NODE, REMOUNT, BIND_SELF = range(14, 24)
ANY_OWNER = 0xFFFFFFFF
BIND_READONLY, BIND_BENEATH = 1, 2
# mount_setattr's and fsmount's attributes (linux/mount.h)
RDONLY, NOSUID, NODEV, NOEXEC = 0x1, 0x2, 0x4, 0x8

HOST_SYSTEM = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # as the host has them: a link or a bind
IMAGE_LINKS = ("bin", "sbin", "lib", "lib64")  # a base image's merged /usr (Debian 12)


class BadRoot(ValueError):
    """The spec asks for a root that cannot be built (a path with '..', a taken device name, ...)."""


def record(tag: int, *fields: int | str | bytes) -> bytes:
    """u32 tag, u32 length, then the fields: ints as u32, strings NUL-ended, bytes as they are (last)."""
    raw = b"".join(struct.pack("=I", f) if isinstance(f, int) else _text(f) if isinstance(f, str) else f
                   for f in fields)
    return struct.pack("=II", tag, len(raw)) + raw


def _text(value: str) -> bytes:
    raw = value.encode()
    if b"\0" in raw:
        raise BadRoot(f"a NUL byte in {value[:40]!r}")
    return raw + b"\0"


def records(spec: SandboxSpec) -> list[bytes]:
    """The root of `spec`, in the order the init builds it."""
    out = [_SKELETON, record(MKDIR, 0o755, spec.uid, spec.gid, "work"), system_usr(spec.system)]
    out += [record(WRITE, 0o644, ANY_OWNER, ANY_OWNER, "etc/" + relative(name), content.encode())
            for name, content in spec.etc_files.items()]
    out += [bind(m) for m in spec.mounts]
    out += [record(MASK, target(path)) for path in spec.masks]
    uploaded = sum(len(up.content) for up in spec.uploads)
    if uploaded > spec.disk_mb << 20:
        raise BadRoot(f"uploads of {uploaded} bytes do not fit the job's disk of {spec.disk_mb} MB")
    out += [record(WRITE, up.mode & 0o777, spec.uid, spec.gid, "work/" + relative(up.path), up.content)
            for up in spec.uploads]
    return out + [_SELF_BINDS, dev(spec.shm_mb, spec.devices)]


def system_usr(system: Mount | None) -> bytes:
    """The job's /usr: a built base image's (merged /usr: /bin, /sbin, /lib and /lib64 are links
    into it), or with `system` None the host's /usr, and /bin, /lib... as the host has them."""
    if system is None:
        return _HOST_USR
    return bind(Mount(system.source, "/usr", True, system.beneath)) + _IMAGE_LINKS


def bind(m: Mount) -> bytes:
    """One bind: a source `beneath` a folder (a runtime's or the base image's `isolated/` tree) is
    resolved by the init with openat2 beneath it through no symlink and bound from that
    descriptor; other sources are host paths the agent chose. Folder or file: as the source is."""
    flags = BIND_READONLY if m.readonly else 0
    if m.beneath is not None:
        try:
            split_relative(m.source)
        except UnsafePath as exc:
            raise BadRoot(f"runtime mount source {m.source!r}: {exc}") from None
        flags |= BIND_BENEATH
    return record(BIND, flags, m.source, m.beneath or "", target(m.target))


def dev(shm_mb: int, devices: list[str] | tuple[str, ...]) -> bytes:
    """A tmpfs /dev (nodev itself) holding binds of a handful of harmless host nodes and of the
    `devices` the job was given (the GPUs Slurm allocated: character devices, the init checks),
    each under its own name; its own devpts and /dev/shm; then read-only."""
    out = [_DEV_NODES]
    for source in devices:
        name = source.rpartition("/")[2]
        if name in mounts.DEV_NODES or name in mounts.DEV_LINKS or name in ("pts", "shm", "") \
                or name.startswith("."):
            raise BadRoot(f"device {source}: its name {name!r} is taken in /dev")
        out.append(record(NODE, source, f"dev/{name}"))
    inodes = max(1024, shm_mb * mounts.INODES_PER_MB)
    shm = record(FS, NOSUID | NODEV | NOEXEC, "tmpfs", f"size={shm_mb}m,nr_inodes={inodes},mode=1777", "dev/shm")
    return b"".join(out + [_DEV_LINKS, shm, _DEV_READONLY])


def relative(path: str) -> str:
    """A path below /work or /etc: relative, no '..' (the init refuses links on the way)."""
    try:
        return "/".join(split_relative(path))
    except UnsafePath as exc:
        raise BadRoot(str(exc)) from None


def target(path: str) -> str:
    """A path in the job's root, relative to the root: no '.', '..' or empty name."""
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise BadRoot(f"path {path!r} in the job's root must not be empty or contain '.' or '..'")
    return "/".join(parts)


# what every job's root has, made once at import (in the launcher, before it forks its stages): a
# stage then reads a few shared objects rather than making forty records in its fresh copy
_SKELETON = b"".join([record(MKDIR, 0o755, ANY_OWNER, ANY_OWNER, name) for name in ("usr", "etc", "proc", "dev")]
                     + [record(MKDIR, 0o1777, ANY_OWNER, ANY_OWNER, "tmp")])
_HOST_USR = b"".join([record(HOST, name) for name in HOST_SYSTEM] + [record(BIND, BIND_READONLY, "/usr", "", "usr")])
_IMAGE_LINKS = b"".join(record(SYMLINK, f"usr/{name}", name) for name in IMAGE_LINKS)
_SELF_BINDS = record(BIND_SELF, "work") + record(BIND_SELF, "tmp")
_DEV_NODES = b"".join([record(FS, NOSUID | NODEV | NOEXEC, "tmpfs", "size=64k,mode=755", "dev")]
                      + [record(NODE, f"/dev/{name}", f"dev/{name}") for name in mounts.DEV_NODES])
_DEV_LINKS = b"".join([record(SYMLINK, link, f"dev/{name}") for name, link in mounts.DEV_LINKS.items()]
                      + [record(FS, NOSUID | NOEXEC, "devpts", "newinstance,ptmxmode=0666,mode=0620", "dev/pts")])
_DEV_READONLY = record(REMOUNT, RDONLY | NOSUID | NODEV | NOEXEC, "dev")

"""The job's plan, and the spawn of jnb-init (init.c) that carries it out as PID 1 of the job.

Python decides, C applies: the holder (or a node's stage) has checked the spec, mounted the job's
tmpfs root in its own mount namespace, compiled the seccomp program and worked out the Landlock
rules for the kernel's ABI; the root's layout is records (rootfs.py) the init builds in that same
namespace, and the rest needs PID 1 of the new PID namespace or the job's own process (/proc,
pivot_root, lo, go, capabilities, uid, Landlock, seccomp, exec). That is written here into
a sealed memfd of tagged records (u32 tag, u32 length, value; strings end with a NUL), which the
init reads at descriptor 5 and closes before the job's process exists. The init is spawned
(posix_spawn: no copy of the holder's pages) from the host's binary, with an empty environment,
the command line `jnb-init` alone, and the signals it forwards blocked from its first instruction.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import sys

from . import identity, landlock, mounts, rootfs, seccomp
from .spec import SandboxSpec

BINARY = os.path.join(sys.prefix, "libexec", "jnb-init")
PLAN_FD = 5
MAX_PLAN = 1 << 30  # init.h's: the plan carries the uploads, which the job's disk bounds

# the records (init.h has the same numbers; the root's follow them: rootfs.py)
ROOT, HOSTNAME, MASK_FILE, MASK_DIR, READONLY_DIR, WAIT_GO, IDS, CAPS = 1, 2, 3, 4, 5, 6, 7, 8
ARG, ENV, LANDLOCK, LANDLOCK_RULE, SECCOMP = 9, 10, 11, 12, 13

#: held from the spawn on: a stop that comes before the init's handlers exist still reaches the job
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


class MissingInit(RuntimeError):
    """jnb-init was not built: no job can start (scripts/install.sh builds it)."""


def _record(tag: int, value: bytes = b"") -> bytes:
    return struct.pack("=II", tag, len(value)) + value


def _text(tag: int, value: str) -> bytes:
    raw = value.encode()
    if b"\0" in raw:
        raise ValueError(f"a NUL byte in {value[:40]!r}")
    return _record(tag, raw + b"\0")


def _caps(names: frozenset[int]) -> int:
    return sum(1 << cap for cap in names)


def plan(spec: SandboxSpec) -> bytes:
    """The records of `spec` that the init needs, the root's last; nothing else of the spec goes to
    the init. Raises rootfs.BadRoot for a root that cannot be built."""
    parts = [_text(ROOT, spec.root_dir), _text(HOSTNAME, spec.hostname),
             _record(IDS, struct.pack("=II", spec.uid, spec.gid)),
             _record(CAPS, struct.pack("=QQ", _caps(identity.FORK_CAPS), _caps(identity.REAPER_CAPS)))]
    parts.append(_PROC_MASKS)
    if spec.wait_for_go:
        parts.append(_record(WAIT_GO))
    parts += [_text(ARG, arg) for arg in spec.argv]
    parts += [_text(ENV, f"{key}={value}") for key, value in spec.env.items()]
    writable = tuple(m.target for m in spec.mounts if not m.readonly)
    ruleset = landlock.ruleset_for(landlock.policy_for(spec.network, writable, refuse_tcp=spec.refuse_tcp))
    if ruleset is not None:
        parts.append(_record(LANDLOCK, struct.pack("=QQQQI", ruleset.handled_fs, ruleset.handled_net, ruleset.scoped,
                                                   landlock.FILE_RIGHTS, ruleset.attr_size)))
        parts += [_record(LANDLOCK_RULE, struct.pack("=Q", access) + path.encode() + b"\0")
                  for path, access in ruleset.rules]
    parts.append(_record(SECCOMP, seccomp.compile_profile(spec.job_type)))
    data = b"".join(parts + rootfs.records(spec))
    if len(data) > MAX_PLAN:
        raise ValueError(f"a plan of {len(data)} bytes (at most {MAX_PLAN})")
    return data


# the same for every job: made once, in the launcher before it forks its stages
_PROC_MASKS = b"".join([_text(MASK_FILE, name) for name in mounts.PROC_MASKED_FILES]
                       + [_text(MASK_DIR, name) for name in mounts.PROC_MASKED_DIRS]
                       + [_text(READONLY_DIR, name) for name in mounts.PROC_READONLY])


def sealed(data: bytes) -> int:
    """A close-on-exec memfd holding `data`, sealed: nobody writes it after this."""
    fd = os.memfd_create("jnb-plan", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def spawn(spec: SandboxSpec, slots: dict[int, int]) -> int:
    """Start the job's init with `slots` (target slot: descriptor; the caller's own 0-4 where it
    has put them already) and the plan at 5; returns its PID (PID 1 inside)."""
    if not os.access(BINARY, os.X_OK):
        raise MissingInit(f"{BINARY} is missing: scripts/install.sh builds it")
    plan_fd = sealed(plan(spec))
    try:
        actions = [(os.POSIX_SPAWN_DUP2, fd, slot) for slot, fd in slots.items()]
        actions.append((os.POSIX_SPAWN_DUP2, plan_fd, PLAN_FD))
        return os.posix_spawn(BINARY, ["jnb-init"], {}, file_actions=actions, setsigmask=FORWARDED)
    finally:
        os.close(plan_fd)

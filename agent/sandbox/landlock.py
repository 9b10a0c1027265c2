"""Landlock: the mandatory-access-control layer, applied by the job's process last before seccomp.

Why a layer that repeats what the mounts, namespaces and uid already refuse: each of those is one
lock, and a mistake in one (a bind left writable, a namespace shared) would open its door. Landlock
is a second lock on the same doors that does not depend on them, and it needs no privilege and no
host set-up (SELinux and AppArmor are on some hosts only). What a job's domain allows:

- filesystem (ABI 1; truncate ABI 3, device ioctls ABI 5): read and execute everywhere; create,
  write, remove and rename only beneath /work, /tmp, /dev/shm and the spec's writable binds (a
  build's install prefix); the device nodes of /dev may be opened for writing and get ioctls
  (/dev/null, ptys, the GPUs a job was given), nothing can be made there;
- TCP (ABI 4): Landlock's network rules are ports, not addresses, so they cannot say "loopback
  only". By default TCP is left to the network namespace (network "none": a namespace with lo
  alone, where a job's own TCP servers, a Dask LocalCluster or torch.distributed, keep working) and
  to the firewall (bridge, which filters by address). An agent with `network.none_tcp: refuse`
  adds the second lock for "none" jobs: no TCP bind or connect at all, on any address;
- scopes (ABI 6): no signal to a process outside the job's domain, no connect to an abstract unix
  socket made outside it.

Where the kernel lacks Landlock or a level, the job runs with what the kernel has, and
`GET /v1/health` lists the missing parts (`status()`). The version comes from
landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION), asked once in the warm launcher.

Raw syscalls through ctypes: the Python bindings on PyPI (landlock, py-landlock, landlockpy) are
pre-1.0 releases of a single author each, and this layer needs the newest rights (scopes) and no
per-job cost beyond the dozen syscalls it makes. The numbers are those of the generic syscall
table, the same on x86_64 and aarch64.
"""

from __future__ import annotations

import ctypes
import os
import stat
from dataclasses import dataclass
from functools import lru_cache

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1

# filesystem rights, with the ABI that introduced each
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # all a rule on a file may hold
READ = EXECUTE | READ_FILE | READ_DIR
DEVICES = READ | WRITE_FILE | TRUNCATE | IOCTL_DEV

# network rights (ABI 4) and scopes (ABI 6)
BIND_TCP, CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

#: what `status()` names, and the ABI each part needs
PARTS = (("filesystem", 1), ("truncate", 3), ("tcp", 4), ("device_ioctl", 5),
         ("scope_signal", 6), ("scope_abstract_unix_socket", 6))

WRITABLE = ("/work", "/tmp", "/dev/shm")
DEVICE_DIR = "/dev"

_libc = ctypes.CDLL(None, use_errno=True)


class LandlockError(OSError):
    """The kernel has Landlock but refused the job's ruleset: the job must not run without it."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass(frozen=True)
class Policy:
    """What one job's domain allows beyond reading and executing."""

    writable: tuple[str, ...] = WRITABLE
    devices: str | None = DEVICE_DIR   # device nodes beneath it: open for writing, ioctls
    tcp: bool = True                   # TCP bind and connect left alone, or refused on every address
    scoped: bool = True                # signals and abstract unix sockets kept inside the domain


def policy_for(network: str, writable_binds: tuple[str, ...] = (), refuse_tcp: bool = False) -> Policy:
    """The sandbox's policy: /work, /tmp, /dev/shm and the writable binds; no TCP for a job
    without a network only where the agent's config asks it (`refuse_tcp`)."""
    return Policy(writable=WRITABLE + writable_binds, tcp=not (refuse_tcp and network == "none"))


@lru_cache(maxsize=1)
def abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (not built, or off at boot)."""
    version = _libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                            ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(version, 0)


def status(version: int | None = None) -> dict[str, object]:
    """For `GET /v1/health`: the ABI, and which parts a job gets and which the kernel lacks."""
    version = abi() if version is None else version
    return {"abi": version, "enforced": [name for name, need in PARTS if version >= need],
            "missing": [name for name, need in PARTS if version < need]}


@dataclass(frozen=True)
class Ruleset:
    """A job's domain as the kernel is asked for it: the handled rights (struct landlock_ruleset_attr
    and the size that the ABI knows) and the (path, rights) rules. The job's init (init.c) adds the
    rules in the job's root, right before seccomp."""

    handled_fs: int
    handled_net: int
    scoped: int
    attr_size: int
    rules: tuple[tuple[str, int], ...]


def ruleset_for(policy: Policy, version: int | None = None) -> Ruleset | None:
    """`policy` with the rights the kernel (or `version`, to act as an older kernel) knows; None
    when there is no Landlock at all. A rule on a file keeps only FILE_RIGHTS."""
    version = abi() if version is None else version
    if version < 1:
        return None
    handled_fs = FS_BY_ABI.get(version, FS_BY_ABI[5])
    rules = [("/", READ & handled_fs)]
    if policy.devices:
        rules.append((policy.devices, DEVICES & handled_fs))
    rules += [(path, handled_fs) for path in policy.writable]
    return Ruleset(handled_fs, (BIND_TCP | CONNECT_TCP) if version >= 4 and not policy.tcp else 0,
                   (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if version >= 6 and policy.scoped else 0,
                   ctypes.sizeof(_RulesetAttr) if version >= 6 else 16 if version >= 4 else 8, tuple(rules))


def apply(policy: Policy, version: int | None = None) -> bool:
    """Restrict this process and every child it makes to `policy` (what init.c does for a job, here
    for tests and benchmarks). False when there is no Landlock at all. no_new_privs must be set."""
    ruleset = ruleset_for(policy, version)
    if ruleset is None:
        return False
    attr = _RulesetAttr(ruleset.handled_fs, ruleset.handled_net, ruleset.scoped)
    fd = _check(_libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr),
                              ctypes.c_size_t(ruleset.attr_size), ctypes.c_uint32(0)), "landlock_create_ruleset")
    try:
        for path, access in ruleset.rules:
            _allow(fd, path, access)
        _check(_libc.syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0)),
               "landlock_restrict_self")
    finally:
        os.close(fd)
    return True


def _allow(ruleset: int, path: str, access: int) -> None:
    """`access` beneath `path` (a file: its file rights only). A path the root does not have is
    skipped: nothing is allowed there."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= FILE_RIGHTS
        rule = _PathBeneath(access, fd)
        _check(_libc.syscall(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                             ctypes.byref(rule), ctypes.c_uint32(0)), f"landlock_add_rule {path}")
    finally:
        os.close(fd)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"{what}: {os.strerror(err)}")
    return result


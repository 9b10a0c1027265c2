"""Shared helpers of the escape probes. Uploaded into each job as /work/probelib.py.

A probe is a small program that runs INSIDE a real job, tries one attack, and reports each check
with `expect`. `finish()` exits 0 only if every attack failed, and prints PROBE_OK so that the test
can tell a probe that ran to its end from one that returned early.

Probes must stay harmless if the sandbox is broken: syscalls get invalid arguments (so "blocked"
and "allowed" give different errors, as in bubblewrap's tests), files are opened for writing
without writing, anything created is removed at once, and other processes only get signal 0.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from dataclasses import dataclass

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

_failed: list[str] = []

#: syscall numbers the probes need that glibc does not wrap
SYSCALLS = {
    "x86_64": {"pivot_root": 155, "clone": 56, "clone3": 435, "fsopen": 430, "open_tree": 428,
               "move_mount": 429, "keyctl": 250, "bpf": 321, "perf_event_open": 298,
               "userfaultfd": 323, "io_uring_setup": 425, "process_vm_readv": 310,
               "pidfd_open": 434, "kexec_load": 246, "init_module": 175, "open_by_handle_at": 304},
    "aarch64": {"pivot_root": 41, "clone": 220, "clone3": 435, "fsopen": 430, "open_tree": 428,
                "move_mount": 429, "keyctl": 219, "bpf": 280, "perf_event_open": 241,
                "userfaultfd": 282, "io_uring_setup": 425, "process_vm_readv": 270,
                "pidfd_open": 434, "kexec_load": 104, "init_module": 105, "open_by_handle_at": 265},
}[platform.machine()]

BAD = 0xFFFFFFFF  # invalid flags / commands


def landlock_abi() -> int:
    """The kernel's Landlock version, 0 without it (landlock_create_ruleset's version query, the
    same number on x86_64 and aarch64). The sandbox applies every part the kernel has."""
    return max(int(libc.syscall(ctypes.c_long(444), None, ctypes.c_long(0), ctypes.c_long(1))), 0)


#: A job with network "none" of an agent with `network.none_tcp: refuse` (the test says so with
#: PROBE_LANDLOCK_TCP=1) gets no TCP bind or connect from Landlock (ABI 4 and later), on any address:
#: a TCP probe then sees EACCES before the network namespace is asked. By default TCP is the
#: namespace's to answer (its own loopback works, nothing else is routed).
LANDLOCK_TCP = os.environ.get("PROBE_LANDLOCK_TCP") == "1" and landlock_abi() >= 4


def expect(ok: bool, what: str) -> bool:
    """Record one check: `ok` means the attack failed (the sandbox held)."""
    print(("held:   " if ok else "BROKEN: ") + what, flush=True)
    if not ok:
        _failed.append(what)
    return bool(ok)


def note(what: str) -> None:
    print("seen:   " + what, flush=True)


def finish() -> None:
    if _failed:
        print(f"{len(_failed)} attack(s) got through:", *_failed, sep="\n  ", flush=True)
        sys.exit(1)
    print("PROBE_OK: every attack failed", flush=True)
    sys.exit(0)


def ename(code: int | None) -> str:
    if code is None or code == 0:
        return "success"
    return errno.errorcode.get(code, str(code))


def err(fn, *args, **kwargs) -> int | None:
    """The errno that `fn(*args)` fails with, or None if it succeeded."""
    try:
        fn(*args, **kwargs)
    except OSError as exc:
        return exc.errno
    return None


def cerr(rc: int) -> int:
    """errno after a raw libc call that returned `rc` (0 if it succeeded)."""
    return ctypes.get_errno() if rc == -1 else 0


def call(name: str, *args) -> int:
    """Call a libc function with raw arguments; return its errno (0 on success)."""
    ctypes.set_errno(0)
    return cerr(getattr(libc, name)(*args))


def sys_call(name: str, *args) -> int:
    """Call a syscall by name with raw (long) arguments; return its errno (0 on success)."""
    ctypes.set_errno(0)
    return cerr(libc.syscall(ctypes.c_long(SYSCALLS[name]), *[ctypes.c_long(a) for a in args]))


def status(pid: int | str = "self") -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


@dataclass
class Mount:
    point: str
    opts: set[str]      # per-mount options (ro, nosuid, nodev, noexec, ...)
    fstype: str
    source: str
    root: str           # the path inside the source filesystem


def _unescape(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountinfo() -> list[Mount]:
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            mounts.append(Mount(point=_unescape(fields[4]), opts=set(fields[5].split(",")),
                                fstype=rfields[0], source=_unescape(rfields[1]), root=_unescape(fields[3])))
    return mounts


def create_and_remove(path: str) -> None:
    """Create a new empty file (never an existing one) and remove it at once."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    os.unlink(path)


def mkdir_and_remove(path: str) -> None:
    os.mkdir(path, 0o700)
    os.rmdir(path)


def open_for_write(path: str) -> None:
    """Open an existing file for writing, write nothing, close (never O_TRUNC, never O_CREAT)."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    os.close(fd)


def pids() -> list[int]:
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def in_child(fn) -> int:
    """Run fn() in a forked child; return the errno it reports (0 if the call worked). If a clone
    got through, its own child also returns 0 here and leaves at once."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, str(fn()).encode())
        os._exit(0)
    os.close(w)
    out = os.read(r, 16)
    os.close(r)
    os.waitpid(pid, 0)
    return int(out or -1)

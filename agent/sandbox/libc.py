"""Thin ctypes wrappers over the Linux calls Python 3.11's `os` does not expose.

Each wrapper raises OSError with the errno and the call's arguments, so a failed set-up step can be
reported as `reason: setup` with a message that says which mount or call failed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

# namespaces
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# prctl options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYSCALLS = {
    "x86_64": {"close_range": 436},
    "aarch64": {"close_range": 436},
}
_NR = _SYSCALLS.get(platform.machine(), _SYSCALLS["x86_64"])


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2); `what` in the error names the target so set-up failures are readable."""
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source or fstype} on {target}",
    )


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare {flags:#x}")


def setns(fd: int, nstype: int) -> None:
    """setns(2) on a namespace descriptor or a pidfd (Python 3.11's os has no setns)."""
    _check(_libc.setns(fd, nstype), f"setns {nstype:#x}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)),
        f"prctl {option}",
    )


def close_range(first: int, last: int = 0xFFFFFFFF) -> None:
    """Close every descriptor from `first` on; falls back to os.closerange on old kernels."""
    if _libc.syscall(_NR["close_range"], first, ctypes.c_uint(last), 0) < 0:
        os.closerange(first, 65536)


def scrub_command_line(name: str) -> None:
    """Overwrite this process's command line (its argv area, which every fork shares) with `name`:
    a job reads its PID 1's through /proc/1/cmdline and /proc/1/task/1/cmdline, and the launcher
    was started with the agent's interpreter path and cgroup parent in it."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48 and 49 of stat(5)
    data = name.encode()[: max(0, end - start - 1)]
    ctypes.memset(start, 0, end - start)
    ctypes.memmove(start, data, len(data))


def set_process_name(name: str) -> None:
    """The name `ps` and /proc/PID/comm show (15 bytes at most)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _libc.prctl(PR_SET_NAME, buf, 0, 0, 0)


def return_free_heap() -> None:
    """Give the kernel back the free pages of every malloc arena (malloc_trim(0)). Large buffers
    stay in the heap, where the next one reuses their pages without a fault (a 2 MiB read of a
    fresh mmap costs 512 page faults, 0.5 CPU s per GB here); a process calls this once it is idle
    again, so a relay leaves it no larger than before."""
    _libc.malloc_trim(0)

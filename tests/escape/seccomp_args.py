"""Attack: the seccomp rules that look at arguments, from inside a real job. Every call gets
arguments the kernel would refuse on its own, so the filter's verdict (EPERM, or ENOSYS for clone3)
differs from the kernel's (EINVAL) and nothing can happen even if a call got through:

- unshare(CLONE_NEWUSER | an invalid flag): EPERM (the kernel says EINVAL);
- a raw clone(CLONE_NEWUSER | CLONE_FS): EPERM (the kernel says EINVAL for that pair);
- clone3(NULL, 0) and clone3({CLONE_NEWUSER | CLONE_FS}): ENOSYS, so libc falls back to clone;
- personality(0xffffffff), the query, is allowed; personality(PER_LINUX32 | ADDR_NO_RANDOMIZE),
  ADDR_NO_RANDOMIZE and READ_IMPLIES_EXEC get EPERM (they switch off the job's own ASLR/NX);
- socket(AF_VSOCK, invalid type) and socket(AF_VSOCK | upper bits): EPERM (the kernel reads the
  family as an int, so upper bits must not get it past the filter).
Calls that could change the probe itself (clone, clone3, personality) run in a forked child.
"""
import ctypes
import errno
import os
import platform
import signal
import socket

from probelib import call, ename, expect, finish, in_child, libc, sys_call

NR = {"x86_64": {"socket": 41, "personality": 135},
      "aarch64": {"socket": 198, "personality": 92}}[platform.machine()]
CLONE_FS, CLONE_NEWUSER, CLONE_NEWNS = 0x200, 0x10000000, 0x20000
PER_LINUX32, ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC = 0x0008, 0x0040000, 0x0400000
AF_VSOCK = 40
INVALID_TYPE = 0x7FFF


def raw(nr: int, *args: int) -> int:
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    e = ctypes.get_errno() if rc == -1 else 0
    if rc > 0 and nr == NR["socket"]:
        os.close(rc)
    return e


class CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal",
                                                     "stack", "stack_size", "tls")]


def clone3_newuser() -> int:
    args = CloneArgs(flags=CLONE_NEWUSER | CLONE_FS, exit_signal=signal.SIGCHLD)
    return sys_call("clone3", ctypes.addressof(args), ctypes.sizeof(args))


e = call("unshare", CLONE_NEWUSER | 0x80)
expect(e == errno.EPERM, f"unshare(CLONE_NEWUSER | invalid 0x80): {ename(e)} (want EPERM; the kernel says EINVAL)")
e = call("unshare", CLONE_NEWUSER | CLONE_NEWNS | 0x80)
expect(e == errno.EPERM, f"unshare(CLONE_NEWUSER | CLONE_NEWNS | invalid 0x80): {ename(e)} (want EPERM)")
e = in_child(lambda: sys_call("clone", CLONE_NEWUSER | CLONE_FS | signal.SIGCHLD, 0, 0, 0, 0))
expect(e == errno.EPERM, f"clone(CLONE_NEWUSER | CLONE_FS): {ename(e)} (want EPERM; the kernel says EINVAL)")
e = in_child(lambda: sys_call("clone3", 0, 0))
expect(e == errno.ENOSYS, f"clone3(NULL, 0): {ename(e)} (want ENOSYS; the kernel says EINVAL)")
e = in_child(clone3_newuser)
expect(e == errno.ENOSYS, f"clone3({{CLONE_NEWUSER | CLONE_FS}}, 64): {ename(e)} (want ENOSYS)")

e = raw(NR["personality"], 0xFFFFFFFF)
expect(e == 0, f"personality(0xffffffff) (the query): {ename(e)} (want success)")
for what, value in (("PER_LINUX32 | ADDR_NO_RANDOMIZE", PER_LINUX32 | ADDR_NO_RANDOMIZE),
                    ("ADDR_NO_RANDOMIZE", ADDR_NO_RANDOMIZE),
                    ("READ_IMPLIES_EXEC", READ_IMPLIES_EXEC),
                    ("PER_LINUX32 | READ_IMPLIES_EXEC", PER_LINUX32 | READ_IMPLIES_EXEC)):
    e = in_child(lambda v=value: raw(NR["personality"], v))
    expect(e == errno.EPERM, f"personality({what}): {ename(e)} (want EPERM)")

e = raw(NR["socket"], AF_VSOCK, INVALID_TYPE, 0)
expect(e == errno.EPERM, f"socket(AF_VSOCK, invalid type): {ename(e)} (want EPERM; the kernel says EINVAL)")
e = raw(NR["socket"], AF_VSOCK | (1 << 32), INVALID_TYPE, 0)
expect(e == errno.EPERM, f"socket(AF_VSOCK | 1 << 32, invalid type): {ename(e)} (want EPERM)")
e = raw(NR["socket"], AF_VSOCK, socket.SOCK_STREAM, 0)
expect(e == errno.EPERM, f"socket(AF_VSOCK, SOCK_STREAM): {ename(e)} (want EPERM)")
e = raw(NR["socket"], socket.AF_UNIX, INVALID_TYPE, 0)
expect(e == errno.EINVAL, f"control: socket(AF_UNIX, invalid type) reaches the kernel: {ename(e)} (want EINVAL)")
finish()

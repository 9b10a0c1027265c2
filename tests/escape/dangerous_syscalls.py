"""Attack: the kernel interfaces behind most recent container escapes: keyrings, bpf,
perf_event_open, userfaultfd, io_uring, kexec, modules, open_by_handle_at, AF_VSOCK and TIOCSTI.
Called with invalid arguments from inside a real job, so EPERM says "blocked by the job's seccomp
filter" and anything else says the call reached the kernel."""
import ctypes
import errno
import socket
import termios

from probelib import BAD, call, ename, expect, finish, sys_call

PROBES = {
    "keyctl(invalid op)": lambda: sys_call("keyctl", 0x7FFFFFFF, 0, 0, 0, 0),
    "bpf(invalid cmd)": lambda: sys_call("bpf", 0x7FFFFFFF, 0, 0),
    "perf_event_open(NULL, invalid flags)": lambda: sys_call("perf_event_open", 0, 0, -1, -1, BAD),
    "userfaultfd(invalid flags)": lambda: sys_call("userfaultfd", BAD),
    "io_uring_setup(0, NULL)": lambda: sys_call("io_uring_setup", 0, 0),
    "kexec_load(invalid flags)": lambda: sys_call("kexec_load", 0, 0xFFFF, 0, BAD),
    "init_module(NULL, 0, NULL)": lambda: sys_call("init_module", 0, 0, 0),
    "open_by_handle_at(-1, NULL, 0)": lambda: sys_call("open_by_handle_at", -1, 0, 0),
    "ioctl(0, TIOCSTI, NULL)": lambda: call("ioctl", 0, ctypes.c_ulong(termios.TIOCSTI), None),
    "ioctl(0, TIOCSTI | upper bits, NULL)": lambda: call("ioctl", 0, ctypes.c_ulong(termios.TIOCSTI | 0xFFFFFFFF00000000), None),
}
for what, fn in PROBES.items():
    e = fn()
    expect(e == errno.EPERM, f"{what}: {ename(e)} (want EPERM)")
try:
    socket.socket(40, socket.SOCK_STREAM).close()  # AF_VSOCK
    e = None
except OSError as exc:
    e = exc.errno
expect(e == errno.EPERM, f"socket(AF_VSOCK): {ename(e)} (want EPERM)")
finish()

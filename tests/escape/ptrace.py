"""Attack: ptrace PID 1 (the reaper), or a process of the job's own, or read their memory.

ptrace with an invalid request on PID 1 gives EPERM if blocked (allowed would be ESRCH/EIO);
PTRACE_ATTACH to the probe's own child (which the kernel would allow the same uid) must give EPERM
too; if it ever succeeded the child is detached and killed at once. /proc/1/mem cannot be opened
and process_vm_readv with invalid flags gives EPERM (allowed: EINVAL)."""
import ctypes
import errno
import os
import signal
import time

from probelib import BAD, call, ename, expect, finish, sys_call

PTRACE_ATTACH, PTRACE_DETACH = 16, 17
e = call("ptrace", ctypes.c_long(0x7FFFFFFF), ctypes.c_long(1), None, None)
expect(e == errno.EPERM, f"ptrace(invalid request, 1): {ename(e)} (want EPERM)")
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
try:
    e = call("ptrace", ctypes.c_long(PTRACE_ATTACH), ctypes.c_long(child), None, None)
    if e == 0:
        call("ptrace", ctypes.c_long(PTRACE_DETACH), ctypes.c_long(child), None, None)
    expect(e == errno.EPERM, f"ptrace(PTRACE_ATTACH, own child {child}): {ename(e)} (want EPERM)")
    e = call("ptrace", ctypes.c_long(PTRACE_ATTACH), ctypes.c_long(1), None, None)
    if e == 0:
        call("ptrace", ctypes.c_long(PTRACE_DETACH), ctypes.c_long(1), None, None)
    expect(e == errno.EPERM, f"ptrace(PTRACE_ATTACH, 1): {ename(e)} (want EPERM)")
finally:
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
e = sys_call("process_vm_readv", 1, 0, 0, 0, 0, BAD)
expect(e == errno.EPERM, f"process_vm_readv(1, invalid flags): {ename(e)} (want EPERM)")
try:
    os.close(os.open("/proc/1/mem", os.O_RDONLY))
    e = None
except OSError as exc:
    e = exc.errno
expect(e in (errno.EACCES, errno.EPERM), f"open /proc/1/mem: {ename(e)}")
finish()

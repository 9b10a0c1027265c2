"""Attack: kernel interfaces a job has no use for that the first seccomp profile let through:
netlink families other than NETLINK_ROUTE (audit, netfilter, xfrm, uevents, generic netlink),
memfd_secret, and sync/syncfs, which flush the host's filesystems. Invalid arguments (socket type
15) keep every call harmless: EPERM says the filter refused it, anything else that it reached the
kernel. sync() takes no arguments, so a filter of the probe's own answers SECCOMP_RET_TRACE for it:
with no tracer that is ENOSYS and the call never runs; the job's filter wins where it decides
(success without a flush, or EPERM)."""
import ctypes
import errno
import os
import socket
import struct

from probelib import BAD, cerr, ename, expect, finish, libc, note

NETLINK = {"NETLINK_XFRM": 6, "NETLINK_AUDIT": 9, "NETLINK_NETFILTER": 12, "NETLINK_KOBJECT_UEVENT": 15,
           "NETLINK_GENERIC": 16, "NETLINK_ROUTE with upper bits set": 1 << 32}
NR = {"x86_64": {"memfd_secret": 447, "sync": 162, "syncfs": 306, "seccomp": 317},
      "aarch64": {"memfd_secret": 447, "sync": 81, "syncfs": 267, "seccomp": 277}}[os.uname().machine]


def raw(name: str, *args: int) -> int:
    ctypes.set_errno(0)
    return cerr(libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_long(a) for a in args]))


def socket_errno(family: int, kind: int, proto: int) -> int:
    ctypes.set_errno(0)
    fd = libc.syscall(ctypes.c_long({"x86_64": 41, "aarch64": 198}[os.uname().machine]),
                      ctypes.c_long(family), ctypes.c_long(kind), ctypes.c_long(proto))
    if fd >= 0:
        os.close(fd)
        return 0
    return ctypes.get_errno()


for name, proto in NETLINK.items():
    e = socket_errno(socket.AF_NETLINK, 15, proto)
    expect(e == errno.EPERM, f"socket(AF_NETLINK, 15, {name}): {ename(e)} (want EPERM)")
e = socket_errno(socket.AF_NETLINK, 15, 0)
expect(e not in (0, errno.EPERM), f"socket(AF_NETLINK, 15, NETLINK_ROUTE) reaches the kernel: {ename(e)}")
with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0):
    note("NETLINK_ROUTE sockets still work (getaddrinfo needs them)")

e = raw("memfd_secret", BAD)
expect(e == errno.EPERM, f"memfd_secret(invalid flags): {ename(e)} (want EPERM)")
e = raw("syncfs", -1)
expect(e == 0, f"syncfs(-1): {ename(e)} (want success without reaching the kernel, which says EBADF)")

# sync(): a filter of our own (stacked after the job's) answers TRACE, which without a tracer is
# ENOSYS and never runs the call; the job's filter, if it decides, wins over TRACE.
SECCOMP_RET_TRACE, SECCOMP_RET_ALLOW = 0x7FF00000, 0x7FFF0000
program = b"".join(struct.pack("=HBBI", *ins) for ins in (
    (0x20, 0, 0, 0),                  # ld [nr]
    (0x15, 0, 1, NR["sync"]),         # jeq sync
    (0x06, 0, 0, SECCOMP_RET_TRACE),
    (0x06, 0, 0, SECCOMP_RET_ALLOW)))
buf = ctypes.create_string_buffer(program, len(program))
fprog = struct.pack("=HxxxxxxQ", 4, ctypes.addressof(buf))
fbuf = ctypes.create_string_buffer(fprog, len(fprog))
expect(raw("seccomp", 1, 0, ctypes.addressof(fbuf)) == 0, "the probe stacked its own filter")
e = raw("sync")
expect(e == 0, f"sync(): {ename(e)} (want success from the job's filter; ENOSYS means it reached our TRACE rule)")
finish()

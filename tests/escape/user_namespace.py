"""Attack: create a user namespace (full capabilities inside it, the usual first step of a kernel
exploit), or any other namespace. Tried in a forked child, so the probe stays where it is even if
it worked: unshare(CLONE_NEWUSER), unshare(CLONE_NEWNS|CLONE_NEWNET) and a raw clone with
CLONE_NEWUSER give EPERM; clone3 gives ENOSYS (so libc falls back to the filtered clone)."""
import errno
import signal

from probelib import call, ename, expect, finish, in_child, sys_call

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x20000, 0x10000000, 0x40000000, 0x20000000


def raw_clone_newuser() -> int:
    """Like fork (no CLONE_VM, same stack copy-on-write): if it worked, parent and child both
    report 0 and the child leaves with the forked child's os._exit."""
    return sys_call("clone", CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)


for what, flags in (("CLONE_NEWUSER", CLONE_NEWUSER), ("CLONE_NEWNS|CLONE_NEWNET", CLONE_NEWNS | CLONE_NEWNET),
                    ("CLONE_NEWPID", CLONE_NEWPID)):
    e = in_child(lambda f=flags: call("unshare", f))
    expect(e == errno.EPERM, f"unshare({what}): {ename(e)} (want EPERM)")
e = in_child(raw_clone_newuser)
expect(e == errno.EPERM, f"clone(CLONE_NEWUSER): {ename(e)} (want EPERM)")
e = sys_call("clone3", 0, 0)
expect(e == errno.ENOSYS, f"clone3(NULL, 0): {ename(e)} (want ENOSYS, so libc falls back to clone)")
finish()

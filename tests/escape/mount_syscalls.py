"""Attack: rearrange mounts or namespaces: mount, umount2, pivot_root, the new mount API, unshare
and setns. Each is called with invalid arguments, so EPERM means blocked while an allowed call
would fail differently (EFAULT, EINVAL, EBADF), as in bubblewrap's tests; nothing can be mounted
or unshared even if a call got through."""
import errno

from probelib import BAD, call, ename, expect, finish, sys_call

PROBES = {
    "mount(NULL, NULL, NULL, 0, NULL)": lambda: call("mount", None, None, None, 0, None),
    "umount2(NULL, invalid flags)": lambda: call("umount2", None, BAD),
    "umount2('/usr', invalid flags)": lambda: call("umount2", b"/usr", BAD),
    "pivot_root(NULL, NULL)": lambda: sys_call("pivot_root", 0, 0),
    "fsopen(NULL, invalid flags)": lambda: sys_call("fsopen", 0, BAD),
    "open_tree(-1, NULL, invalid flags)": lambda: sys_call("open_tree", -1, 0, BAD),
    "move_mount(-1, NULL, -1, NULL, invalid flags)": lambda: sys_call("move_mount", -1, 0, -1, 0, BAD),
    "unshare(invalid flag 0x1)": lambda: call("unshare", 0x1),
    "setns(-1, 0)": lambda: call("setns", -1, 0),
}
for what, fn in PROBES.items():
    e = fn()
    expect(e == errno.EPERM, f"{what}: {ename(e)} (want EPERM)")
finish()

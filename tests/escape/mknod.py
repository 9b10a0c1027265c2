"""Attack: make device nodes (a disk, a copy of /dev/mem) in /tmp or /work. mknod of a character or
block device fails with EPERM; a FIFO (no device) works, so mknod itself is reachable. Anything
made is unlinked at once. /work and /tmp are nodev besides, so a node planted by any other way
could not be opened."""
import errno
import os
import stat

from probelib import ename, expect, finish, mountinfo

for d in ("/tmp", "/work", "/dev/shm"):
    for kind, mode, dev in (("char 1:1 (mem)", stat.S_IFCHR, os.makedev(1, 1)),
                            ("block 8:0 (sda)", stat.S_IFBLK, os.makedev(8, 0))):
        path = os.path.join(d, "jnb-probe-node")
        try:
            os.mknod(path, mode | 0o600, dev)
            os.unlink(path)
            e = None
        except OSError as exc:
            e = exc.errno
        expect(e == errno.EPERM, f"mknod {kind} in {d}: {ename(e)} (want EPERM)")
path = "/tmp/jnb-probe-fifo"
os.mknod(path, stat.S_IFIFO | 0o600)
os.unlink(path)
expect(True, "mknod of a FIFO works (the positive control)")
for m in mountinfo():
    if m.point in ("/tmp", "/work", "/dev/shm"):
        expect("nodev" in m.opts, f"{m.point} is nodev")
finish()

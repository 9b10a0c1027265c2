"""Attack: reach host devices through /dev. It holds only the handful of nodes a program needs;
no block device anywhere under it; every character device is one of null zero full random urandom
tty ptmx; /dev itself is read-only (nothing can be added)."""
import errno
import os
import stat

from probelib import create_and_remove, ename, err, expect, finish, note

EXPECTED = {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin", "stdout",
            "stderr"}
ALLOWED_CHR = {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)}
names = set(os.listdir("/dev"))
note(f"/dev holds {sorted(names)}")
expect(names <= EXPECTED, f"nothing but the minimal set: extra {sorted(names - EXPECTED)}")
expect({"null", "zero", "urandom", "pts", "shm"} <= names, "the basic nodes are there")
for dirpath, dirnames, files in os.walk("/dev"):
    for name in dirnames + files:
        path = os.path.join(dirpath, name)
        st = os.lstat(path)
        if stat.S_ISBLK(st.st_mode):
            expect(False, f"block device {path}")
        elif stat.S_ISCHR(st.st_mode):
            dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if dirpath == "/dev/pts" and name != "ptmx":
                continue  # the job's own ptys, if it made any
            expect(dev in ALLOWED_CHR, f"char device {path} {dev} is a harmless one")
e = err(create_and_remove, "/dev/jnb-probe")
expect(e == errno.EROFS, f"create /dev/jnb-probe: {ename(e)} (want EROFS)")
finish()

"""Attack: reach the host's SysV shared memory. The test made a segment on the host (id
PROBE_HOST_SHMID); in the job's IPC namespace /proc/sysvipc/shm lists nothing and shmctl(IPC_STAT)
on that id says EINVAL (no such segment; a visible root-owned one would say EACCES)."""
import ctypes
import errno
import os

from probelib import cerr, ename, expect, finish, libc, note

shmid = int(os.environ["PROBE_HOST_SHMID"])
lines = open("/proc/sysvipc/shm").read().splitlines()
expect(bool(lines) and lines[0].split()[0] == "key", "/proc/sysvipc/shm is readable (the check can see rows)")
ids = [int(line.split()[1]) for line in lines[1:]]
note(f"shm ids visible: {ids}")
expect(shmid not in ids, f"the host's segment {shmid} is not listed")
expect(ids == [], "no segment at all is listed")
IPC_STAT = 2
buf = ctypes.create_string_buffer(256)
ctypes.set_errno(0)
e = cerr(libc.shmctl(shmid, IPC_STAT, buf))
expect(e in (errno.EINVAL, errno.EPERM), f"shmctl({shmid}, IPC_STAT): {ename(e)} (want EINVAL: not there)")
for kind in ("msg", "sem"):
    rows = open(f"/proc/sysvipc/{kind}").read().splitlines()[1:]
    expect(rows == [], f"/proc/sysvipc/{kind} lists nothing: {rows[:3]}")
finish()

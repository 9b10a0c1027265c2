"""Attack: exhaust inodes (kernel memory) with empty files in /tmp, which no byte limit counts.

The job's memory limit is PROBE_MEMORY_MB; creating empty files must fail (ENOSPC from an inode
limit, or ENOMEM from the memory cgroup that tmpfs inodes are charged to) before PROBE_MAX_FILES.
If the memory cgroup OOM-kills the job instead, the progress lines show how far it got. The files are
removed again (and die with the job's tmpfs anyway)."""
import errno
import os

from probelib import ename, expect, finish, note

limit = int(os.environ["PROBE_MAX_FILES"])
d = "/tmp/jnb-probe-inodes"
os.mkdir(d)
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
created, error = 0, None
try:
    while created < limit:
        os.close(os.open(str(created), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd))
        created += 1
        if created % 5000 == 0:
            print(f"created {created} files", flush=True)
except OSError as exc:
    error = exc.errno
note(f"created {created} empty files before {ename(error)}")
for i in range(created):
    os.unlink(str(i), dir_fd=fd)
os.close(fd)
os.rmdir(d)
expect(error in (errno.ENOSPC, errno.ENOMEM, errno.EDQUOT),
       f"creating files stopped by {ename(error)} after {created} (limit tried: {limit})")
finish()

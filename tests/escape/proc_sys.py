"""Attack: write kernel settings through /proc/sys (and /proc/irq, /proc/bus, /proc/fs).

They are bind-mounted read-only: mountinfo says ro and O_WRONLY opens fail. ns_last_pid is mode
0666 on a normal /proc, so only the read-only mount stops its open, with EROFS. Files are opened,
never written."""
import errno
import os

from probelib import ename, err, expect, finish, mountinfo, open_for_write

mounts = {m.point: m for m in mountinfo()}
for path in ("/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"):
    if os.path.isdir(path):
        m = mounts.get(path)
        expect(m is not None and "ro" in m.opts, f"{path} mounted {m and ','.join(sorted(m.opts))}")
        expect(os.statvfs(path).f_flag & os.ST_RDONLY, f"statvfs({path}) has ST_RDONLY")
for path in ("/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
             "/proc/sys/kernel/modprobe", "/proc/sys/fs/binfmt_misc/register", "/proc/sys/kernel/sysrq"):
    if os.path.exists(path):
        e = err(open_for_write, path)
        expect(e is not None, f"open {path} O_WRONLY: {ename(e)}")
path = "/proc/sys/kernel/ns_last_pid"
mode = os.stat(path).st_mode & 0o777
e = err(open_for_write, path)
expect(e == errno.EROFS, f"open {path} (mode {mode:o}) O_WRONLY: {ename(e)} (want EROFS)")
finish()

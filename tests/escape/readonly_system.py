"""Attack: write to /usr, /bin, /lib (and every submount under them), or use them for setuid/dev.

Every mount at or below them must be ro,nosuid,nodev (mountinfo per-mount options and statvfs
flags), and creating a file or directory in each mount's top directory must fail with EROFS: as
the job user a writable-but-root-owned directory would say EACCES, so only EROFS proves the mount
itself is read-only. PROBE_SUBMOUNT names a tmpfs the test mounted under /usr on the host (rw,
suid, dev there): with PROBE_HOST_USR=1 (an agent with `base: host`) it must be here, and read-only
too; otherwise /usr is the base image and the host's submount must not be here at all.
"""
import errno
import os
import uuid

from probelib import create_and_remove, ename, err, expect, finish, mkdir_and_remove, mountinfo, note, open_for_write

SYSTEM = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
tops = sorted({os.path.realpath(p) for p in SYSTEM if os.path.lexists(p)})
note(f"system trees: {tops}")
mounts = [m for m in mountinfo() if any(m.point == t or m.point.startswith(t + "/") for t in tops)]
expect("/usr" in [m.point for m in mounts], "/usr is a mount of its own (bound read-only)")
submount = os.environ.get("PROBE_SUBMOUNT")
if submount and os.environ.get("PROBE_HOST_USR") == "1":
    expect(submount in [m.point for m in mounts], f"the host's submount {submount} is in the sandbox, so it is checked")
elif submount:
    expect(not os.path.lexists(submount), f"the host's submount {submount} is not in the sandbox (/usr is the base image)")

for m in mounts:
    expect({"ro", "nosuid", "nodev"} <= m.opts, f"{m.point} ({m.fstype}) mounted {','.join(sorted(m.opts))}")
    flags = os.statvfs(m.point).f_flag
    expect(flags & os.ST_RDONLY and flags & os.ST_NOSUID and flags & os.ST_NODEV,
           f"statvfs({m.point}) flags {flags:#x} include ST_RDONLY|ST_NOSUID|ST_NODEV")
    if os.path.isdir(m.point):
        name = os.path.join(m.point, f"jnb-probe-{uuid.uuid4().hex}")
        e = err(create_and_remove, name)
        expect(e == errno.EROFS, f"create {name}: {ename(e)} (want EROFS)")
        e = err(mkdir_and_remove, name)
        expect(e == errno.EROFS, f"mkdir {name}: {ename(e)} (want EROFS)")

for path in ("/usr/bin/python3", "/usr/bin/env", "/bin/sh"):
    real = os.path.realpath(path)
    e = err(open_for_write, real)
    expect(e is not None, f"open {real} O_WRONLY: {ename(e)}")
for path in ("/bin", "/lib", "/usr/lib"):
    e = err(os.rename, path, path + "-jnb-probe") if os.path.lexists(path) else errno.ENOENT
    expect(e is not None, f"rename {path}: {ename(e)}")
finish()

"""Attack: write to the sandbox's root or its /etc (the root is remounted read-only after
pivot_root). Creating anything there must fail with EROFS, not merely EACCES."""
import errno
import os
import uuid

from probelib import create_and_remove, ename, err, expect, finish, mkdir_and_remove, mountinfo, open_for_write

root = [m for m in mountinfo() if m.point == "/"]
expect(len(root) == 1 and "ro" in root[0].opts, f"/ mounted {root and sorted(root[-1].opts)}")
expect(os.statvfs("/").f_flag & os.ST_RDONLY, "statvfs(/) has ST_RDONLY")
tag = uuid.uuid4().hex
for directory in ("/", "/etc", "/etc/ssl", "/dev"):
    name = os.path.join(directory, f"jnb-probe-{tag}")
    e = err(create_and_remove, name)
    expect(e == errno.EROFS, f"create {name}: {ename(e)} (want EROFS)")
    e = err(mkdir_and_remove, name)
    expect(e == errno.EROFS, f"mkdir {name}: {ename(e)} (want EROFS)")
for path in ("/etc/passwd", "/etc/group", "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf"):
    if os.path.exists(path):
        e = err(open_for_write, path)
        expect(e is not None, f"open {path} O_WRONLY: {ename(e)}")
        e = err(os.chmod, path, os.stat(path).st_mode & 0o7777)  # same mode: harmless if allowed
        expect(e is not None, f"chmod {path} (to its own mode): {ename(e)}")
e = err(os.symlink, "/work", "/jnb-probe-link-" + tag)
if e is None:
    os.unlink("/jnb-probe-link-" + tag)
expect(e == errno.EROFS, f"symlink in /: {ename(e)} (want EROFS)")
finish()

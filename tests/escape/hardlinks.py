"""Attack: hard-link host files (or a setuid binary) into /work, for the agent to copy out or for
a later job. Links across mounts fail with EXDEV: /etc/passwd and /etc/hosts live on the root
mount, env and python3 on /usr, and /tmp is a mount of its own."""
import errno
import os

from probelib import ename, err, expect, finish

with open("/tmp/jnb-probe-own", "w") as f:
    f.write("mine\n")
try:
    for source in ("/etc/passwd", "/etc/hosts", "/usr/bin/env", os.path.realpath("/usr/bin/python3"),
                   "/tmp/jnb-probe-own"):
        target = "/work/jnb-probe-link"
        e = err(os.link, source, target)
        if e is None:
            os.unlink(target)
        expect(e == errno.EXDEV, f"link {source} -> {target}: {ename(e)} (want EXDEV)")
finally:
    os.unlink("/tmp/jnb-probe-own")
finish()

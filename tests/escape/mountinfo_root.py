"""Attack: find the host behind the sandbox's mounts. No mount in /proc/self/mountinfo may come
from the agent's root folder (PROBE_AGENT_ROOT, its real host path) or from any test folder
(jnb-test-), neither as its root inside the source filesystem nor as its mount point, but the
published read-only trees jobs run on (the base image at /usr, a runtime's at /opt/runtimes, each
an `isolated/` folder below `<root>/runtimes/.versions/`, which its root shows); the root
mount itself must not be a bind of a host folder. PID 1 (the job's init) must have the sandbox's
root as its root: /proc/1/root is either unreadable for the job (EACCES) or the same inode as "/",
and so are /proc/self/root and "/..". Only reads.

With PROBE_WAIT_FOR_HOST=1 (started as `python3 mountinfo_root.py <marker>`), the probe then prints
"ready for the host" and waits (at most 60 s) for SIGUSR1, so that the test can compare, from the
host, the root of the job's init with the probe's own root while both run (inside the job, pid 1
is not the job's to inspect)."""
import errno
import os
import signal

from probelib import ename, expect, finish, mountinfo, note

agent_root = os.environ["PROBE_AGENT_ROOT"]
mounts = mountinfo()
note(f"{len(mounts)} mounts")
published = agent_root + "/runtimes/.versions/"
for m in mounts:
    fields = (m.root, m.point, m.source)
    if m.root.startswith(published) and "/isolated/" in m.root and "ro" in m.opts and (
            m.point == "/usr" or m.point.startswith("/opt/runtimes/")):
        note(f"mount {m.point} is a published read-only tree (its root names the agent's runtimes folder)")
        continue
    expect(not any(agent_root in f or "jnb-test-" in f for f in fields),
           f"mount {m.point} ({m.fstype}, root {m.root}, source {m.source}) does not come from the agent's root")
roots = [m for m in mounts if m.point == "/"]
expect(len(roots) >= 1, "there is a root mount")
top = roots[-1]
note(f"root mount: {top.fstype} from {top.source}, root {top.root}")
expect(top.root == "/", f"the root mount is not a bind of a host folder (its root is {top.root!r})")

me = os.stat("/")
up = os.stat("/..")
expect((up.st_dev, up.st_ino) == (me.st_dev, me.st_ino), "/.. is / itself")
expect(os.readlink("/proc/self/root") == "/", f"/proc/self/root -> {os.readlink('/proc/self/root')}")
try:
    target = os.readlink("/proc/1/root")
    e = None
except OSError as exc:
    target, e = None, exc.errno
if e is not None:
    expect(e == errno.EACCES, f"readlink /proc/1/root: {ename(e)} (EACCES: pid 1 is not the job's to inspect)")
else:
    expect(target == "/", f"/proc/1/root -> {target!r}")
    st = os.stat("/proc/1/root/")
    expect((st.st_dev, st.st_ino) == (me.st_dev, me.st_ino), "/proc/1/root is the same directory as /")
    with open("/proc/1/mountinfo") as f:
        theirs = f.read()
    with open("/proc/self/mountinfo") as f:
        ours = f.read()
    expect(theirs == ours, "pid 1 sees the same mounts as the job")
if os.environ.get("PROBE_WAIT_FOR_HOST") == "1":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    print("ready for the host", flush=True)
    got = signal.sigtimedwait({signal.SIGUSR1}, 60)
    expect(got is not None, "the host looked at the job's roots within 60 s")
finish()

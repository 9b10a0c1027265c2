"""Attack: reach sysfs or cgroupfs (cgroup v1's release_agent is a classic container escape; the
job's own limits live there). No /sys, no /sys/fs/cgroup, no sysfs/cgroup/cgroup2 mount; the job's
cgroup namespace shows its cgroups as "/"; mounting cgroupfs fails with EPERM."""
import errno
import os

from probelib import call, ename, expect, finish, mountinfo, note

for path in ("/sys", "/sys/fs/cgroup", "/sys/kernel", "/sys/fs/cgroup/memory/release_agent"):
    expect(not os.path.lexists(path), f"{path} is absent")
types = {m.fstype for m in mountinfo()}
note(f"filesystem types mounted: {sorted(types)}")
expect(not types & {"sysfs", "cgroup", "cgroup2", "securityfs", "debugfs", "tracefs", "bpf", "configfs"},
       "no sysfs, cgroupfs, securityfs, debugfs, tracefs, bpf or configfs")
lines = open("/proc/self/cgroup").read().splitlines()
note(f"/proc/self/cgroup: {lines}")
expect(lines and all(line.split(":", 2)[2] == "/" for line in lines), "cgroup namespace: every path is /")
os.mkdir("/tmp/jnb-probe-cg")
try:
    e = call("mount", b"cgroup", b"/tmp/jnb-probe-cg", b"cgroup", 0, b"memory")
    if e == 0:
        call("umount2", b"/tmp/jnb-probe-cg", 2)
    expect(e == errno.EPERM, f"mount cgroup: {ename(e)} (want EPERM)")
finally:
    os.rmdir("/tmp/jnb-probe-cg")
finish()

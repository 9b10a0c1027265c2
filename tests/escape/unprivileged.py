"""Attack: be root, or hold any capability. The job runs as an unprivileged uid/gid with no
supplementary groups, every capability set empty (bounding and ambient included), no_new_privs and
a seccomp filter (mode 2). setuid(0) fails."""
import errno
import os

from probelib import ename, err, expect, finish, libc, status

s = status()
for key in ("Uid", "Gid"):
    ids = s[key].split()
    expect("0" not in ids, f"{key}: {s[key]!r} has no 0")
expect(os.getgroups() == [], f"supplementary groups {os.getgroups()}")
for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
    expect(int(s[key], 16) == 0, f"{key}: {s[key]}")
expect(s["NoNewPrivs"].strip() == "1", f"NoNewPrivs: {s['NoNewPrivs']}")
expect(s["Seccomp"].strip() == "2", f"Seccomp: {s['Seccomp']} (2 = filter)")
PR_CAPBSET_READ = 23
last = int(open("/proc/sys/kernel/cap_last_cap").read())
held = [cap for cap in range(last + 1) if libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1]
expect(held == [], f"capabilities in the bounding set: {held}")
for fn, args in ((os.setuid, (0,)), (os.setgid, (0,)), (os.setgroups, ([0],)), (os.seteuid, (0,))):
    e = err(fn, *args)
    expect(e == errno.EPERM, f"{fn.__name__}{args}: {ename(e)} (want EPERM)")
finish()

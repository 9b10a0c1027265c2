"""Attack: read host paths from the command lines of the job's processes. PID 1 (the reaper) is a
fork of the agent's launcher, which was started with the agent's interpreter path and cgroup parent
on its command line: /proc/1/cmdline is masked, but the same text is at /proc/1/task/1/cmdline
and in every other view of it. PROBE_FORBIDDEN lists what must appear in none of them."""
import glob
import os

from probelib import expect, finish, note

forbidden = [w for w in os.environ["PROBE_FORBIDDEN"].split(":") if w]
paths = sorted(set(glob.glob("/proc/[0-9]*/cmdline") + glob.glob("/proc/[0-9]*/task/[0-9]*/cmdline")))
for path in paths:
    try:
        with open(path, "rb") as f:
            text = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError as exc:
        note(f"{path}: {exc.strerror}")
        continue
    note(f"{path}: {text[:120]!r}")
    leaked = [w for w in forbidden if w in text]
    expect(not leaked, f"{path} names no host path ({leaked or 'none of ' + str(len(forbidden))})")
expect(any(p.startswith("/proc/1/task/") for p in paths), "PID 1's threads were looked at")
finish()

"""Attack: see the host's processes. The job's /proc is a fresh procfs of its own PID namespace:
only PID 1 (the reaper) and the probe itself are there; the agent's host pid (PROBE_AGENT_PID)
and the test's (PROBE_TEST_PID) are not, and the probe's NSpid has one level only (a host procfs
would show the host pid first)."""
import os

from probelib import expect, finish, note, pids, status

visible = pids()
note(f"/proc lists pids {visible}")
expect(visible == sorted({1, os.getpid()}), "only PID 1 and the probe are visible")
expect(os.getppid() == 1, f"the probe's parent is PID 1 (got {os.getppid()})")
me = status()
expect(len(me["NSpid"].split()) == 1, f"NSpid {me['NSpid']!r}: /proc is the job namespace's own")
for var in ("PROBE_AGENT_PID", "PROBE_TEST_PID"):
    pid = int(os.environ[var])
    expect(not os.path.exists(f"/proc/{pid}"), f"/proc/{pid} ({var}) is absent")
tasks = sum(1 for p in visible for _ in os.listdir(f"/proc/{p}/task"))
expect(tasks == len(visible), f"{tasks} threads in {len(visible)} processes")
pid1 = status(1)
note(f"PID 1: Name {pid1['Name']!r}, Uid {pid1['Uid']!r}, PPid {pid1['PPid']!r}")
expect(pid1["PPid"].strip() == "0", "PID 1's parent is outside the namespace (PPid 0)")
expect(pid1["Uid"].split()[1] == "0", "PID 1 (the reaper) runs as root in the namespace, not as the job")
finish()

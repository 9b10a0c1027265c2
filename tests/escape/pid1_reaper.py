"""Attack: signal or trace PID 1, the reaper. It is root in the job's namespace, so the job user
gets EPERM even for signal 0 (which is all we send): no signal the job sends can kill its reaper
and so detach the job from its cleanup."""
import os

from probelib import expect, finish, status

pid1 = status(1)
try:
    os.kill(1, 0)
    outcome = "delivered"
except PermissionError:
    outcome = "PermissionError"
except ProcessLookupError:
    outcome = "ProcessLookupError"
expect(outcome == "PermissionError", f"kill(1, 0): {outcome} (PID 1 runs as uid {pid1['Uid'].split()[1]})")
expect(int(pid1["CapEff"], 16) == 1 << 5, f"the reaper kept only CAP_KILL: CapEff {pid1['CapEff']}")
expect(int(pid1["CapBnd"], 16) == 1 << 5, f"the reaper's bounding set is only CAP_KILL: CapBnd {pid1['CapBnd']}")
expect(pid1["NoNewPrivs"].strip() == "1", "the reaper has no_new_privs")
finish()

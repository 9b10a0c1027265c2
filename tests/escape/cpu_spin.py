"""Attack: a CPU spin. PROBE_SPINNERS processes each burn CPU in a tight loop until PROBE_SPIN_S
seconds of wall time have passed (bounded, so the probe ends by itself even if it is never
stopped). The job's cpu_percent limit must throttle them: the test compares the CPU time the agent
reports with the job's wall time. With PROBE_IGNORE_TERM=1 every process ignores SIGTERM, so a
stop has to escalate to SIGKILL. Started as `python3 cpu_spin.py <marker>` so that the host can
find any survivor by its argv."""
import os
import signal
import time

spinners = int(os.environ.get("PROBE_SPINNERS", "2"))
spin_s = float(os.environ["PROBE_SPIN_S"])
if os.environ.get("PROBE_IGNORE_TERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def spin(deadline: float) -> int:
    n = 0
    while time.monotonic() < deadline:
        for _ in range(10000):
            n += 1
    return n


deadline = time.monotonic() + spin_s
pids = []
for _ in range(spinners - 1):
    pid = os.fork()
    if pid == 0:
        spin(deadline)
        os._exit(0)
    pids.append(pid)
print(f"spinning in {spinners} processes for {spin_s:g}s", flush=True)
spin(deadline)
for pid in pids:
    os.waitpid(pid, 0)
print(f"spun; own cpu {sum(os.times()[:4]):.2f}s", flush=True)

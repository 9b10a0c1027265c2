"""Attack: a memory bomb. Allocates and touches memory in PROBE_CHUNK_MB steps, up to PROBE_MAX_MB
(a bound several times the job's memory_mb, small next to the host's RAM). The job's memory cgroup
must kill it (the test expects the job to end with reason "oom"); reaching the bound means it was
never stopped, which prints "not killed" and fails."""
import os
import sys

chunk_mb = int(os.environ.get("PROBE_CHUNK_MB", "8"))
bound_mb = int(os.environ["PROBE_MAX_MB"])
held = []
total = 0
while total + chunk_mb <= bound_mb:
    held.append(b"\x5a" * (chunk_mb << 20))  # every byte written: the pages are really used
    total += chunk_mb
    print(f"allocated {total} MiB", flush=True)
print(f"BROKEN: not killed after {total} MiB", flush=True)
sys.exit(1)

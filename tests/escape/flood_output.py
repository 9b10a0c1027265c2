"""Job side of the output-flood attack: write PROBE_OUTPUT_MB of stdout (the agent stores a job's
output on the host's disk as it comes, outside the job's disk_mb)."""
import os

chunk = b"x" * 65535 + b"\n"
for _ in range(int(os.environ["PROBE_OUTPUT_MB"]) * 16):
    os.write(1, chunk)

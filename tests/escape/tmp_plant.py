"""Job A of the /tmp privacy test: leave markers in /tmp and /dev/shm, then stay alive."""
import os
import time

marker = os.environ["PROBE_MARKER"]
for d in ("/tmp", "/dev/shm"):
    with open(os.path.join(d, marker), "w") as f:
        f.write("job A was here\n")
print("planted", flush=True)
time.sleep(120)

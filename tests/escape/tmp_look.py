"""Job B of the /tmp privacy test: job A (still running) left PROBE_MARKER in its /tmp and
/dev/shm; B sees neither."""
import os

from probelib import expect, finish, note

marker = os.environ["PROBE_MARKER"]
for d in ("/tmp", "/dev/shm"):
    expect(not os.path.lexists(os.path.join(d, marker)), f"job A's {d}/{marker} is invisible")
    note(f"{d} holds {os.listdir(d)}")
expect(not [e for e in os.listdir("/dev/shm")], "/dev/shm is empty at start")
finish()

"""Attack: see (or race on) the host's shared /tmp. The test put PROBE_HOST_MARKER in the host's
/tmp; the job's /tmp is its own, so the marker and every other host file there are invisible."""
import os

from probelib import expect, finish, mountinfo, note

marker = os.environ["PROBE_HOST_MARKER"]
expect(not os.path.lexists(marker), f"{marker} (the host's) is invisible")
entries = os.listdir("/tmp")
note(f"/tmp holds {entries}")
expect(not [e for e in entries if e.startswith("jnb-test-")], "no jnb-test- entry of the host's /tmp")
st = os.stat("/tmp")
expect(st.st_mode & 0o1777 == 0o1777, f"/tmp mode {st.st_mode & 0o7777:o} (sticky, like any /tmp)")
tmp = [m for m in mountinfo() if m.point == "/tmp"]
expect(len(tmp) == 1 and tmp[0].fstype == "tmpfs", f"/tmp is a tmpfs of the job: {tmp}")
finish()

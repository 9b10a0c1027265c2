"""Attack: connect to a host service on an abstract unix socket (no file, no permission check: only
the network namespace separates them). The test listens on PROBE_ABSTRACT; the job is refused. The
agent's own unix socket path, if any (PROBE_AGENT_SOCKET), is not there either."""
import errno
import os
import socket

from probelib import ename, expect, finish

name = "\0" + os.environ["PROBE_ABSTRACT"]
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.settimeout(3)
    try:
        s.connect(name)
        e = None
    except OSError as exc:
        e = exc.errno
expect(e == errno.ECONNREFUSED, f"connect to the host's abstract socket @{name[1:]}: {ename(e)} (want ECONNREFUSED)")
sock = os.environ.get("PROBE_AGENT_SOCKET")
if sock:
    expect(not os.path.lexists(sock), f"{sock} is absent")
finish()

"""Attack: talk to an agent from inside a job, through its unix socket (PROBE_AGENT_SOCKET, the host
path of the socket the job's own agent listens on) or the TCP port of another agent on the host's
loopback (PROBE_AGENT_PORT). The host path must not exist in the sandbox (its /tmp is private and
the agent's root is not mounted), no unix socket of the host may be listed in /proc/net/unix, and
the port must be refused (the job's 127.0.0.1 is its own, in its own network namespace; with
network.none_tcp: refuse, Landlock refuses the connect first).

Checked first, before the probe opens anything: only descriptors 0-2 are open, so the agent's
listening socket did not leak into the job either."""
import os

leaked = []
for fd in range(3, 1024):
    try:
        leaked.append((fd, os.readlink(f"/proc/self/fd/{fd}")))
    except OSError:
        continue

import errno  # noqa: E402
import socket  # noqa: E402

from probelib import LANDLOCK_TCP, ename, expect, finish, note  # noqa: E402

expect(not leaked, f"no descriptor beyond 0-2 at start (the agent's listener did not leak): {leaked}")
path = os.environ["PROBE_AGENT_SOCKET"]
e = None
try:
    os.lstat(path)
except OSError as exc:
    e = exc.errno
expect(e == errno.ENOENT, f"lstat {path}: {ename(e)} (want ENOENT)")
e = None
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.settimeout(3)
    try:
        s.connect(path)
    except OSError as exc:
        e = exc.errno
expect(e in (errno.ENOENT, errno.ECONNREFUSED), f"connect to the agent's socket {path}: {ename(e)} (want ENOENT)")
parent = os.path.dirname(path)
e = None
try:
    os.listdir(parent)
except OSError as exc:
    e = exc.errno
expect(e == errno.ENOENT, f"the socket's folder {parent}: {ename(e)} (want ENOENT)")
listed = [line.split()[-1] for line in open("/proc/net/unix").read().splitlines()[1:] if len(line.split()) > 7]
note(f"/proc/net/unix lists {len(listed)} named sockets")
expect(path not in listed and not any(p.startswith(parent) for p in listed),
       f"/proc/net/unix does not list the agent's socket: {listed[:10]}")

port = int(os.environ["PROBE_AGENT_PORT"])
e = None
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.settimeout(3)
    try:
        s.connect(("127.0.0.1", port))
    except socket.timeout:
        e = errno.ETIMEDOUT
    except OSError as exc:
        e = exc.errno
want = errno.EACCES if LANDLOCK_TCP else errno.ECONNREFUSED  # Landlock first; else the job's own loopback
expect(e == want, f"connect 127.0.0.1:{port} (the other agent's port): {ename(e)} (want {ename(want)})")
finish()

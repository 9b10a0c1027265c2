"""Attack: reach the network. A job with network "none" sees only lo, and cannot reach the agent's
port on the host's 127.0.0.1 (PROBE_AGENT_PORT: refused, since its 127.0.0.1 is its own), the host's
addresses (PROBE_HOST_ADDRS), the bridge gateway or metadata address (unreachable: no route)."""
import errno
import os
import socket

from probelib import ename, expect, finish

names = [n for _i, n in socket.if_nameindex()]
expect(names == ["lo"], f"interfaces {names}")
devs = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
expect(devs == ["lo"], f"/proc/net/dev lists {devs}")
route = open("/proc/net/route").read().splitlines()[1:]
expect(route == [], f"no IPv4 routes: {route}")


def connect(addr: str, port: int, family=socket.AF_INET) -> int | None:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        try:
            s.connect((addr, port))
        except socket.timeout:
            return errno.ETIMEDOUT
        except OSError as exc:
            return exc.errno
    return None


port = int(os.environ["PROBE_AGENT_PORT"])
e = connect("127.0.0.1", port)
expect(e == errno.ECONNREFUSED, f"connect 127.0.0.1:{port} (the agent's port on the host): {ename(e)} (want ECONNREFUSED)")
targets = [a for a in os.environ.get("PROBE_HOST_ADDRS", "").split(",") if a]
targets += ["169.254.169.254", "172.17.0.1", "10.0.0.1", "8.8.8.8"]
for addr in targets:
    e = connect(addr, port)
    expect(e in (errno.ENETUNREACH, errno.EHOSTUNREACH), f"connect {addr}: {ename(e)} (want ENETUNREACH)")
e = connect("::1", port, socket.AF_INET6)
expect(e in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.EAFNOSUPPORT),
       f"connect [::1]:{port}: {ename(e)}")
finish()

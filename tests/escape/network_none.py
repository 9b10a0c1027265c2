"""Attack: reach the network. A job with network "none" sees only lo, and cannot reach the agent's
port on the host's 127.0.0.1 (PROBE_AGENT_PORT), the host's addresses (PROBE_HOST_ADDRS), the bridge
gateway or metadata address. The network namespace has no route (UDP gets ENETUNREACH, TCP the
namespace's answers: refused, unreachable); with network.none_tcp: refuse (PROBE_LANDLOCK_TCP=1),
Landlock refuses every TCP connect first (EACCES), checked on its own since UDP still asks the
namespace."""
import errno
import os
import socket

from probelib import LANDLOCK_TCP, ename, expect, finish

names = [n for _i, n in socket.if_nameindex()]
expect(names == ["lo"], f"interfaces {names}")
devs = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
expect(devs == ["lo"], f"/proc/net/dev lists {devs}")
route = open("/proc/net/route").read().splitlines()[1:]
expect(route == [], f"no IPv4 routes: {route}")


def connect(addr: str, port: int, family=socket.AF_INET, kind=socket.SOCK_STREAM) -> int | None:
    with socket.socket(family, kind) as s:
        s.settimeout(3)
        try:
            s.connect((addr, port))
        except socket.timeout:
            return errno.ETIMEDOUT
        except OSError as exc:
            return exc.errno
    return None


def tcp_want(*netns: int) -> tuple[int, ...]:
    return (errno.EACCES,) if LANDLOCK_TCP else netns


port = int(os.environ["PROBE_AGENT_PORT"])
e = connect("127.0.0.1", port)
expect(e in tcp_want(errno.ECONNREFUSED),
       f"connect 127.0.0.1:{port} (the agent's port on the host): {ename(e)} (want {ename(tcp_want(errno.ECONNREFUSED)[0])})")
targets = [a for a in os.environ.get("PROBE_HOST_ADDRS", "").split(",") if a]
targets += ["169.254.169.254", "172.17.0.1", "10.0.0.1", "8.8.8.8"]
for addr in targets:
    e = connect(addr, port, kind=socket.SOCK_DGRAM)
    expect(e in (errno.ENETUNREACH, errno.EHOSTUNREACH), f"UDP connect {addr}: {ename(e)} (want ENETUNREACH)")
    e = connect(addr, port)
    want = tcp_want(errno.ENETUNREACH, errno.EHOSTUNREACH)
    expect(e in want, f"TCP connect {addr}: {ename(e)} (want {ename(want[0])})")
e = connect("::1", port, socket.AF_INET6)
expect(e in tcp_want(errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.EAFNOSUPPORT),
       f"connect [::1]:{port}: {ename(e)}")
finish()

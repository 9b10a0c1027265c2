"""The job's own loopback works (so the network probes above are not failing for a broken stack):
a UDP datagram to itself on 127.0.0.1, and a TCP echo to itself (a job's own servers work). Where
the agent refuses TCP to "none" jobs (network.none_tcp: refuse, PROBE_LANDLOCK_TCP=1), the TCP bind
is Landlock's to refuse (EACCES, ABI 4 and later)."""
import errno
import socket

from probelib import LANDLOCK_TCP, ename, err, expect, finish

with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
    a.bind(("127.0.0.1", 0))
    b.settimeout(5)
    b.sendto(b"ping", a.getsockname())
    a.settimeout(5)
    expect(a.recv(4) == b"ping", f"UDP 127.0.0.1:{a.getsockname()[1]} answers to itself")

with socket.socket() as server:
    if LANDLOCK_TCP:
        e = err(server.bind, ("127.0.0.1", 0))
        expect(e == errno.EACCES, f"TCP bind 127.0.0.1 refused by Landlock: {ename(e)} (want EACCES)")
    else:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"ping")
                expect(conn.recv(4) == b"ping", f"TCP 127.0.0.1:{port} answers to itself")
finish()

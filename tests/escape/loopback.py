"""The job's own loopback works (so the network probes above are not failing for a broken stack):
bind to 127.0.0.1, connect to itself, and exchange a few bytes."""
import socket

from probelib import expect, finish

with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        conn, _ = server.accept()
        with conn:
            client.sendall(b"ping")
            expect(conn.recv(4) == b"ping", f"127.0.0.1:{port} answers to itself")
finish()

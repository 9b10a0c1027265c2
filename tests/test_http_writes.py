"""A response's writes in one loop turn go to the socket together (agent/api/server.py,
`HeldWrites`): a `POST /v1/jobs` answer's head and body, an event stream's last event and its
terminating chunk. A real uvicorn on uvloop with the agent's protocol and real sockets; the real
transport is wrapped only to count what reaches it. What is held is never held past its turn: a
stream's head and first event reach a client while the stream goes on waiting."""

from __future__ import annotations

import asyncio
import http.client
import socket
from typing import Any

import pytest

from joblet_agent.api import server
from test_http_sendfile import get, serving


class Counted:
    """The real transport, counting the writes that reach it."""

    def __init__(self, real: asyncio.Transport, writes: list[list[bytes]]) -> None:
        self.real, self.writes = real, writes

    def write(self, data: bytes) -> None:
        self.writes.append([bytes(data)])
        self.real.write(data)

    def writelines(self, parts: Any) -> None:
        parts = [bytes(p) for p in parts]
        self.writes.append(parts)
        self.real.writelines(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture()
def writes(monkeypatch) -> list[list[bytes]]:
    seen: list[list[bytes]] = []

    class CountedHeld(server.HeldWrites):
        def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
            super().__init__(Counted(transport, seen), loop)  # type: ignore[arg-type]

    monkeypatch.setattr(server, "HeldWrites", CountedHeld)
    return seen


async def small_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/created":
        body = b'{"id":"0123456789abcdef","status":"PENDING"}'
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
    else:  # an event stream whose last event and end come in one turn
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson")]})
        await asyncio.sleep(0.05)  # the head goes alone, at the end of its turn
        await send({"type": "http.response.body", "body": b'{"seq":1,"type":"exit"}\n', "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def test_a_response_head_and_body_go_in_one_write(writes):
    with serving(small_app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/created", body=b"{}")
        resp = conn.getresponse()
        assert resp.status == 201 and resp.read() == b'{"id":"0123456789abcdef","status":"PENDING"}'
        assert len(writes) == 1, writes
        assert writes[0][0].startswith(b"HTTP/1.1 201 ") and writes[0][-1].endswith(b'"PENDING"}')
        conn.close()


def test_a_streams_last_event_and_its_end_go_in_one_write(writes):
    with serving(small_app) as port:
        resp = get(port)
        assert resp.read() == b'{"seq":1,"type":"exit"}\n'
        assert [w[0][:9] for w in writes] == [b"HTTP/1.1 ", b"18\r\n{\"seq"], writes
        assert b"".join(writes[1]).endswith(b"}\n\r\n0\r\n\r\n")


def test_what_is_held_goes_at_the_end_of_its_turn_while_the_stream_waits():
    """The head and a first event reach the client though the response is far from over."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson")]})
        await send({"type": "http.response.body", "body": b'{"seq":1,"type":"status"}\n', "more_body": True})
        while (await receive())["type"] != "http.disconnect":  # until the client has gone
            pass

    with serving(app) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b'"status"}\n' not in got:
                piece = sock.recv(4096)  # a timeout here: held past its turn
                assert piece, got
                got += piece
            assert got.startswith(b"HTTP/1.1 200 ")
        finally:
            sock.close()

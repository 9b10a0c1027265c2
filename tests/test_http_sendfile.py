"""A file's range in a response body, sent by the agent's HTTP server itself (ASGI's zero-copy
send, agent/api/server.py): how the event streams send a job's log without reading it into the
agent. A real uvicorn on uvloop with the agent's protocol, in this process, and real sockets: the
body arrives exactly, in order with what the response sent before and after the range, to a
reader that keeps up (sendfile) and to one far slower than the sender (the socket full, small
pieces through uvloop's buffer in between); a reader that leaves in the middle costs nothing."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from joblet_agent.api import server
from joblet_agent.quotas import ApiLimits
from waiting import wait_until

SIZE = 8 << 20


@pytest.fixture()
def data_file(tmp_path) -> tuple[str, bytes]:
    data = os.urandom(SIZE // 2) + bytes(range(256)) * (SIZE // 512)
    path = tmp_path / "events.ndjson"
    path.write_bytes(data)
    return str(path), data


@pytest.fixture()
def calls(monkeypatch) -> dict[str, int]:
    """How often the server sent from the file itself and read pieces of it (this process only)."""
    counted = {"sendfile": 0, "pread": 0}
    real_sendfile, real_pread = os.sendfile, os.pread

    def sendfile(*args: Any) -> int:
        counted["sendfile"] += 1
        return real_sendfile(*args)

    def pread(*args: Any) -> bytes:
        counted["pread"] += 1
        return real_pread(*args)

    monkeypatch.setattr(server.os, "sendfile", sendfile)
    monkeypatch.setattr(server.os, "pread", pread)
    return counted


def file_app(path: str, ended: list[str]) -> Any:
    """Sends "<", the file's bytes but its first and last as a range, then ">"."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert server.ZEROCOPY in scope["extensions"]  # the server offers it (no TLS here)
        fd = os.open(path, os.O_RDONLY)
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream")]})
            await send({"type": "http.response.body", "body": b"<", "more_body": True})
            await send({"type": server.ZEROCOPY, "file": fd, "offset": 1, "count": os.fstat(fd).st_size - 2,
                        "more_body": True})
            await send({"type": "http.response.body", "body": b">", "more_body": False})
            ended.append("sent")
        finally:
            os.close(fd)
            ended.append("closed")

    return app


@contextmanager
def serving(app: Any) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = uvicorn.Config(app, http=server.protocol_for(ApiLimits()), loop="uvloop", lifespan="off",
                            log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: srv.started, timeout=30, message="the server did not start")
        yield sock.getsockname()[1]
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


def get(port: int, rcvbuf: int = 0) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    conn.sock = sock
    conn.request("GET", "/")
    return conn.getresponse()


def test_a_range_goes_out_with_sendfile_between_what_came_before_and_after(data_file, calls):
    path, data = data_file
    ended: list[str] = []
    with serving(file_app(path, ended)) as port:
        resp = get(port)
        body = resp.read()
        assert resp.status == 200 and resp.getheader("transfer-encoding") == "chunked"
        assert body == b"<" + data[1:-1] + b">"
        assert calls["sendfile"] >= 1
        wait_until(lambda: ended == ["sent", "closed"])


def test_a_slow_reader_gets_every_byte_in_order(data_file, calls):
    """The sender fills the socket at once: pieces go through uvloop's buffer while it waits for
    room, and sendfile goes on only once that buffer is empty, so nothing is reordered."""
    path, data = data_file
    ended: list[str] = []
    with serving(file_app(path, ended)) as port:
        resp = get(port, rcvbuf=16 << 10)
        got = bytearray()
        while piece := resp.read(64 << 10):
            got += piece
            if len(got) < SIZE // 4:
                time.sleep(0.002)
        assert bytes(got) == b"<" + data[1:-1] + b">"
        assert calls["sendfile"] >= 2 and calls["pread"] >= 1, calls  # both ways were taken
        wait_until(lambda: ended == ["sent", "closed"])


def test_a_reader_that_leaves_in_the_middle_ends_the_response_and_others_are_served(data_file, calls):
    path, data = data_file
    ended: list[str] = []
    with serving(file_app(path, ended)) as port:
        resp = get(port, rcvbuf=16 << 10)
        assert resp.read(100_000) == b"<" + data[1:100_000]
        resp.close()  # with most of the range unsent
        wait_until(lambda: "closed" in ended, message=lambda: ended)  # the app's send returned
        assert get(port).read() == b"<" + data[1:-1] + b">"


@pytest.mark.parametrize("offered", [True, False])
def test_an_event_stream_sends_a_range_as_the_server_allows(data_file, offered):
    """Where the server offers the zero-copy send, a log's range goes to it as one; elsewhere (TLS,
    another server) it is read and sent in pieces: the same bytes either way."""
    from joblet_agent.api.streams import StreamQuota
    from joblet_agent.jobs.loglines import LogRange
    from waiting import run_coroutine

    path, data = data_file
    fd = os.open(path, os.O_RDONLY)
    sent: list[dict[str, Any]] = []

    async def body() -> Any:
        yield memoryview(b"<")
        yield LogRange(fd, 1, SIZE - 2)
        yield b">"

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == server.ZEROCOPY:
            message = {**message, "body": os.pread(message["file"], message["count"], message["offset"])}
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "extensions": {server.ZEROCOPY: {}} if offered else {}}
    try:
        run_coroutine(StreamQuota(4).response("owner", body(), "application/x-ndjson")(scope, receive, send))
    finally:
        os.close(fd)
    kinds = [m["type"] for m in sent[1:]]
    assert (server.ZEROCOPY in kinds) == offered
    assert all(len(m["body"]) <= 2 << 20 for m in sent[1:] if m["type"] != server.ZEROCOPY)
    assert b"".join(bytes(m["body"]) for m in sent[1:]) == b"<" + data[1:-1] + b">"

"""The agent's HTTP parser (httptools, agent/api/server.py), attacked through its port.

llhttp parses in C and keeps no limit of its own on a head; it parses every pipelined request a
read holds; a parse error may come while a response is under way. Each test sends what a hostile
or broken client would and checks that it gets a clear 400 or a closed connection, never a
stray answer or a traceback, and that the agent goes on serving everyone else.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing

import pytest

from agentproc import AgentProcess, running_agent
from test_abuse import connect, head, still_serves, status_of

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    with running_agent() as proc:
        yield proc
        log = proc.log_path.read_text()
        assert "Traceback" not in log, log[-3000:]


def exchange(agent: AgentProcess, *pieces: bytes, pause: float = 0.0, answers: int | None = None) -> bytes:
    """Send `pieces` (each in its own write, `pause` apart), then read until the agent closes, or
    until it has sent `answers` whole responses."""
    data = b""
    with closing(connect(agent, timeout=30)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for piece in pieces:
                s.sendall(piece)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed before the last piece: its answer is still there to read
        try:
            while answers is None or len(split(data)[0]) < answers:
                if not (chunk := s.recv(65536)):
                    break
                data += chunk
        except ConnectionResetError:
            pass
    return data


def split(data: bytes) -> tuple[list[int], bytes]:
    """The status of each whole response in `data` (each framed by its Content-Length), in order,
    and the bytes after the last one."""
    found = []
    while data.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in data:
        head_part, _, rest = data.partition(b"\r\n\r\n")
        length = [int(ln.split(b":")[1]) for ln in head_part.lower().split(b"\r\n")
                  if ln.startswith(b"content-length:")]
        if not length or len(rest) < length[0]:
            break
        found.append(status_of(head_part))
        data = rest[length[0]:]
    return found, data


def statuses(data: bytes) -> list[int]:
    found, rest = split(data)
    assert rest == b"", f"bytes after the last whole response: {rest[:200]!r}"
    return found


def chunked_post(agent: AgentProcess) -> bytes:
    return head("POST", "/v1/jobs", token=agent.user_token, Content_Type="application/json",
                Transfer_Encoding="chunked")


MALFORMED = {
    "junk request line": b"JUNK\r\n\r\n",
    "a byte above ASCII in the path": b"GET /v1/h\xffealth HTTP/1.1\r\nHost: x\r\n\r\n",
    "bare LF line ends": b"GET /v1/health HTTP/1.1\nHost: x\n\n",
    "Content-Length and Transfer-Encoding": b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                            b"Transfer-Encoding: chunked\r\n\r\nabc",
    "two Content-Lengths": b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    "a NUL in a header": b"GET /v1/health HTTP/1.1\r\nHost: x\x00y\r\n\r\n",
    "a space before a header's colon": b"GET /v1/health HTTP/1.1\r\nHost : x\r\n\r\n",
    "a Content-Length beyond 64 bits": b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n"
                                       b"Content-Length: 99999999999999999999999\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_request_gets_400_and_a_close(agent: AgentProcess, request_bytes: bytes) -> None:
    assert statuses(exchange(agent, request_bytes)) == [400]


@pytest.mark.parametrize("chunk", [b"zz\r\n", b"ffffffffffffffffffffff\r\n", b"2\r\n{}XX"],
                         ids=["not hex", "a size beyond 64 bits", "no CRLF after the data"])
def test_an_invalid_chunked_body_gets_400(agent: AgentProcess, chunk: bytes) -> None:
    """With a valid token, so that the body is read: the parser's error is the answer."""
    assert statuses(exchange(agent, chunked_post(agent), chunk)) == [400]


OVERSIZED = {
    "a header line that never ends": [b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 65536],
    "a 100 KB head in one write": [b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000 + b"\r\n\r\n"],
    "5,000 small headers": [b"GET /v1/health HTTP/1.1\r\nHost: x\r\n"
                            + b"".join(b"X-%d: y\r\n" % i for i in range(5000)) + b"\r\n"],
    "a 100 KB URL": [b"GET /v1/health?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"],
    "a head in 4 KiB writes": [b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: "] + [b"a" * 4096] * 4,
}


@pytest.mark.parametrize("pieces", OVERSIZED.values(), ids=OVERSIZED.keys())
def test_a_head_beyond_16_kib_gets_400(agent: AgentProcess, pieces: list[bytes]) -> None:
    data = exchange(agent, *pieces, pause=0.01)
    assert statuses(data) == [400], data[:300]


def test_trailers_beyond_16_kib_get_400(agent: AgentProcess) -> None:
    """The trailers of a chunked body are a head too: the parser holds an unfinished one whole."""
    data = exchange(agent, chunked_post(agent), b"2\r\n{}\r\n0\r\nX-Trailer: " + b"a" * 65536, pause=0.01)
    assert statuses(data) == [400], data[:300]


def test_a_head_that_comes_in_small_pieces_is_served(agent: AgentProcess) -> None:
    """12 KiB of head in 100 writes: within the limit, whatever the reads it arrives in."""
    whole = head("GET", "/v1/health", X_Pad="a" * 12_000)
    data = exchange(agent, *(whole[i:i + 123] for i in range(0, len(whole), 123)), pause=0.001, answers=1)
    assert statuses(data) == [200]


def test_pipelined_requests_are_answered_in_order(agent: AgentProcess) -> None:
    data = exchange(agent, head("GET", "/v1/health") + head("GET", "/v1/nothing-here", token=agent.user_token)
                    + head("GET", "/v1/health"),
                    answers=3)
    assert statuses(data) == [200, 404, 200]


def test_a_deep_pipeline_is_closed_and_others_are_served(agent: AgentProcess) -> None:
    """64 requests in one write: the parser would queue them all; past 32 the connection is closed."""
    data = exchange(agent, head("GET", "/v1/health") * 64)
    assert len(statuses(data)) < 64
    still_serves(agent)


def test_junk_behind_an_event_stream_closes_it_without_a_stray_answer(agent: AgentProcess) -> None:
    """A parse error while a response streams: a 400 there would land inside the stream."""
    api = agent.api()
    job = api.submit(command=["sleep", "30"])
    try:
        with closing(connect(agent, timeout=30)) as s:
            s.sendall(head("GET", f"/v1/jobs/{job}/events?follow=true", token=agent.user_token))
            data = s.recv(65536)
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
            s.sendall(b"JUNK\r\n\r\n")
            while chunk := s.recv(65536):
                data += chunk
        assert b"HTTP/1.1 400" not in data and b"Invalid HTTP" not in data, data[-300:]
    finally:
        api.call("POST", f"/v1/jobs/{job}/stop")
    assert api.events(job)[-1]["type"] == "exit"


# ---- the guards, on this parser: a stream is never taken for a connection that owes its head ----

def read_to_end(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def read_until_exit(s: socket.socket) -> bytes:
    data = b""
    while b'"type":"exit"' not in data.replace(b" ", b""):
        if not (chunk := s.recv(65536)):
            break
        data += chunk
    return data.replace(b" ", b"")


def test_an_event_stream_outlives_the_head_deadline() -> None:
    """The deadline is off while a request is served: a stream of a job that runs three deadlines
    long gets the job's exit event."""
    with running_agent("api: {header_timeout_s: 1}\n") as agent, closing(connect(agent)) as s:
        job = agent.api().submit(command=["sleep", "3"])
        s.sendall(head("GET", f"/v1/jobs/{job}/events?follow=true", token=agent.user_token))
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        data = read_until_exit(s)
        assert b'"type":"exit"' in data, f"the stream was closed before the exit event: {data[-300:]!r}"


def test_the_cap_sheds_connections_that_owe_a_head_and_spares_a_stream() -> None:
    """Eight connections at most: twelve that each sent half a head push out the oldest of their
    own, never the event stream opened before them."""
    with running_agent("api: {max_connections: 8, header_timeout_s: 120}\n") as agent, ExitStack() as held:
        api = agent.api()
        job = api.submit(command=["sleep", "60"])
        stream = held.enter_context(closing(connect(agent)))
        stream.sendall(head("GET", f"/v1/jobs/{job}/events?follow=true", token=agent.user_token))
        assert stream.recv(65536).startswith(b"HTTP/1.1 200")
        half = []
        for _ in range(12):
            s = held.enter_context(closing(connect(agent)))
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
            half.append(s)
        assert read_to_end(half[0]) == b"", "the oldest connection owing its head was kept"
        api.call("POST", f"/v1/jobs/{job}/stop")
        assert b'"type":"exit"' in read_until_exit(stream), "the event stream was shed"

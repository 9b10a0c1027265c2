"""uvicorn on httptools and uvloop, run with what a public-facing server needs and uvicorn leaves out:
a deadline for each request head, a cap on open connections that sheds the idle ones first, and the
bounds on what a peer may make the parser hold that h11 had and httptools has not.

uvicorn has a keep-alive timeout, but it is cancelled by the first byte of the next request, and
nothing times a connection that never finishes its head: 1,100 connections that each sent half a
request held the agent's descriptors until no other user got in. Here each connection must have
sent a whole request head `header_timeout_s` after it opened (or after its last response), and
when `max_connections` are open, a new one closes the oldest connection still waiting for its head
(never one whose request is being served, such as an event stream). Someone who opens connections
without finishing them only ever pushes out their own. The body's own timeout and size are the
ASGI guard's (`guard.py`).

httptools (llhttp) parses in C where h11 parsed in Python (the agent's CPU per request and per
relayed byte); unlike h11 it keeps no limit of its own on a head, it accumulates a header or trailer
line whole before it hands it over, and it parses every pipelined request a read holds. So a head
or a trailer section may take `MAX_FRAMING` bytes (h11's 16 KiB; counted in slices of that size, so
a little more may pass) and a connection `MAX_PIPELINED` requests queued behind the one being served;
beyond either the connection gets a 400 or, when a response is under way on it, is closed.

Where no TLS is between, the server offers ASGI's zero-copy send (`http.response.zerocopysend`): an
event stream hands it ranges of the job's log, which go to the socket with sendfile(2), neither
read into the agent nor copied into the socket (a relay's two largest costs in the agent's CPU).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ..quotas import ApiLimits

MAX_FRAMING = 16 * 1024  # bytes of a request head, or of a chunked body's trailers, as h11 allowed
MAX_PIPELINED = 32       # requests parsed and queued behind the one being served
UNJOINED_FROM = 64 * 1024  # a streamed body's chunk this large goes out without a copy
ZEROCOPY = "http.response.zerocopysend"  # ASGI's extension: the server sends a file's range itself
FILE_CHUNK = 2 << 20          # a file's range is sent in chunks of at most this (a client reads one whole)
FULL_SOCKET_PIECE = 16 * 1024  # of a file's range, through the transport while the socket is full
ARRIVALS = itertools.count()  # the order connections began to owe a head, for ties of the clock


HOLD_AT_MOST = 64 * 1024  # bytes a response's writes are held for before they go at once


class HeldWrites:
    """A response's transport whose writes are held until the loop turn that made them ends, or
    until the response's last write, and then go to the socket together (one writev): a trivial
    job's `POST` answer (head and body) and its event stream's exit event and terminating chunk
    were two loopback TCP sends each, each a segment that the agent and the client paid for
    (the agent's largest single cost per job). Everything else goes to the real transport."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.real = transport
        self.loop = loop
        self.held: list[bytes] = []
        self.size = 0
        self.holding = False  # set by the cycle while it sends a message that is not its last
        self.due = False      # a flush is scheduled

    def write(self, data: bytes) -> None:
        if not self.holding:
            self.held.append(data)
            self.flush()
            return
        self.held.append(data)
        self.size += len(data)
        if self.size >= HOLD_AT_MOST:
            self.flush()
        elif not self.due:
            self.due = True
            self.loop.call_soon(self.flush)

    def writelines(self, parts: Any) -> None:
        self.held.extend(parts)
        self.flush()

    def flush(self) -> None:
        self.due = False
        held, self.held, self.size = self.held, [], 0
        if not held or self.real.is_closing():
            return
        if len(held) == 1:
            self.real.write(held[0])
        else:
            self.real.writelines(held)

    def close(self) -> None:
        self.flush()
        self.real.close()

    def abort(self) -> None:
        self.held, self.size = [], 0
        self.real.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class UnjoinedCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, except that a large chunk of a streamed body goes to the
    transport as its size line, itself and CRLF in one `writelines` (uvloop sends them in one writev)
    where uvicorn joins the three into a new buffer: each of the relay's 2 MiB log steps was copied
    once more, into fresh pages. The transport may hold the chunk until the peer takes it, so what
    a response sends must not change afterwards (the event log's reads are `bytes`)."""

    transport: HeldWrites  # type: ignore[assignment]  # set by the protocol (on_headers_complete)

    async def send(self, message: Any) -> None:
        if message["type"] == ZEROCOPY:
            self.transport.flush()  # what was written before goes first
            await self._send_file(message)
            return
        body = message.get("body", b"")
        if (len(body) < UNJOINED_FROM or not message.get("more_body", False) or not self.chunked_encoding
                or message["type"] != "http.response.body" or self.response_complete
                or self.scope["method"] == "HEAD"):
            # held unless it is the response's last message: that one takes what is held with it
            self.transport.holding = message["type"] == "http.response.start" or message.get("more_body", False)
            try:
                await super().send(message)
            finally:
                self.transport.holding = False
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if not self.disconnected:
            self.transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))

    async def _send_file(self, message: Any) -> None:
        """A file's range as body (ASGI's zero-copy send; `file` is a descriptor that stays open
        until this returns), in chunks of at most `FILE_CHUNK` (a client reads a chunk whole), sent
        with sendfile(2) from the page cache: neither read into the agent nor copied into the
        socket. A range that cannot be sent whole closes the connection: the client resumes after
        the last complete event it has."""
        if self.disconnected:
            return
        if not self.response_started or self.response_complete:
            raise RuntimeError("a file's range sent outside a response body")
        if self.scope["method"] == "HEAD" or not message["count"]:
            return
        if self.flow.write_paused:
            await self.flow.drain()
        fd, offset, end = message["file"], message["offset"], message["offset"] + message["count"]
        transport = self.transport.real
        limits = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)  # paused while anything waits in uvloop's buffer
        try:
            sock = transport.get_extra_info("socket").fileno()
            while offset < end:
                size = min(end - offset, FILE_CHUNK) if self.chunked_encoding else end - offset
                if self.chunked_encoding:
                    transport.write(b"%x\r\n" % size)
                if not await self._send_range(sock, fd, offset, size):
                    transport.abort()  # the peer is gone
                    return
                offset += size
                if self.chunked_encoding:
                    transport.write(b"\r\n")
        except BaseException:
            transport.abort()  # a chunk cut short: nothing after it could be framed
            raise
        finally:
            if not transport.is_closing():
                transport.set_write_buffer_limits(high=limits[1], low=limits[0])

    async def _send_range(self, sock: int, fd: int, offset: int, count: int) -> bool:
        """Bytes of the file straight to the socket, once uvloop's buffer is empty (what it holds
        goes first); where the socket is full, a small piece goes to uvloop's buffer instead, which
        waits for room (the transport's limits are 0 here, so its protocol is paused until then).
        False when the peer has gone."""
        transport = self.transport.real
        while count:
            if self.disconnected or transport.is_closing():
                return False
            if transport.get_write_buffer_size():
                if self.flow.write_paused:
                    await self.flow.drain()
                    continue
                sent = _through(transport, fd, offset, min(count, FULL_SOCKET_PIECE))  # keeps the order
            else:
                try:
                    sent = os.sendfile(sock, fd, offset, count)
                except BlockingIOError:
                    sent = _through(transport, fd, offset, min(count, FULL_SOCKET_PIECE))
                except (BrokenPipeError, ConnectionError):
                    return False
                if sent == 0:
                    raise OSError(f"the file ended {count} bytes short of its range")
            offset, count = offset + sent, count - sent
        return True


def _through(transport: asyncio.WriteTransport, fd: int, offset: int, count: int) -> int:
    """`count` bytes of the file at `offset` read and written to the transport (its buffer)."""
    piece = os.pread(fd, count, offset)
    if not piece:
        raise OSError(f"the file ended {count} bytes short of its range")
    transport.write(piece)
    return len(piece)


class PeerOverreach(Exception):
    """Raised in a parser callback: httptools turns it into a parse error (a 400 or a close)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One connection; `limits` is set on the subclass `protocol_for` makes."""

    limits: ApiLimits = ApiLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # the parser looks up the callbacks below on `self`
        self.head_timer: asyncio.TimerHandle | None = None
        self.opened_at = (0.0, 0)  # when it began to owe a head, and in which order (uvloop's clock
        # is read once per loop turn: connections accepted in one turn share a time)
        self.message_done = True  # the last request the parser began has been received whole
        self.framing = True       # the next bytes are a head's or trailers', not a body's
        self.framing_bytes = 0    # of the reads that held nothing but those
        self.moved = False        # a read reached a body or a head's end

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.opened_at = (self.loop.time(), next(ARRIVALS))
        if len(self.connections) > self.limits.max_connections:
            self._shed()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Fed in slices of `MAX_FRAMING` bytes, so that a head or trailers that a read holds whole
        are counted too (the parser accumulates an unfinished header line out of sight)."""
        if len(data) <= MAX_FRAMING:
            self._feed(data)
        else:
            view = memoryview(data)
            for start in range(0, len(data), MAX_FRAMING):
                if self.transport.is_closing():
                    break
                self._feed(view[start:start + MAX_FRAMING])
        self._watch_head()

    def _feed(self, data: bytes | memoryview) -> None:
        framing, self.moved = self.framing, False
        super().data_received(data)  # type: ignore[arg-type]
        if framing and not self.moved and not self.transport.is_closing():
            self.framing_bytes += len(data)
            if self.framing_bytes > MAX_FRAMING:
                self.send_400_response(f"Request head or trailers longer than {MAX_FRAMING} bytes.")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    # parser callbacks: where a read stands (head, body, trailers), and the pipeline's depth
    def on_headers_complete(self) -> None:
        self.message_done, self.framing, self.framing_bytes, self.moved = False, False, 0, True
        super().on_headers_complete()
        if type(self.cycle) is RequestResponseCycle:  # its task has not run yet
            self.cycle.__class__ = UnjoinedCycle
            self.cycle.transport = HeldWrites(self.transport, self.loop)  # type: ignore[assignment]
            if self.transport.get_extra_info("sslcontext") is None:  # sendfile cannot go through TLS
                self.scope.setdefault("extensions", {})[ZEROCOPY] = {}  # type: ignore[typeddict-item]
        if len(self.pipeline) > MAX_PIPELINED:
            raise PeerOverreach(f"more than {MAX_PIPELINED} requests pipelined")

    def on_body(self, body: bytes) -> None:
        self.framing, self.framing_bytes, self.moved = False, 0, True
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self.framing = True  # a chunk's data or, after the last chunk, the trailers

    def on_chunk_complete(self) -> None:
        self.framing, self.framing_bytes, self.moved = False, 0, True

    def on_message_complete(self) -> None:
        self.message_done, self.framing = True, True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """A 400 when it answers the request being received; a close when another answer is due
        first on this connection, or has begun (a 400 there would land inside it)."""
        cycle = self.cycle
        if cycle is None or self.owes_head() or (not self.message_done and not cycle.response_started
                                                 and not self.pipeline):
            super().send_400_response(msg)
        else:
            self.transport.close()

    def owes_head(self) -> bool:
        """No request is being received or answered: the peer owes the next head."""
        return self.cycle is None or (self.message_done and self.cycle.response_complete)

    def _watch_head(self) -> None:
        """Armed while the peer owes a request head; off once it has sent one."""
        waiting = self.owes_head() and not self.transport.is_closing()
        if waiting and self.head_timer is None:
            self.opened_at = (self.loop.time(), next(ARRIVALS))
            self.head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)
        elif not waiting:
            self._disarm()

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.owes_head() and not self.transport.is_closing():
            self.transport.close()

    def _shed(self) -> None:
        """Close the oldest connection that has not sent a whole request head (this one if none)."""
        waiting = [c for c in self.connections if isinstance(c, GuardedHttpToolsProtocol) and c is not self
                   and c.owes_head()]
        victim = min(waiting, key=lambda c: c.opened_at, default=self)
        victim.transport.close()
        self.connections.discard(victim)


def protocol_for(limits: ApiLimits) -> type[GuardedHttpToolsProtocol]:
    return type("AgentHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def run(app: Any, limits: ApiLimits, **where: Any) -> None:
    """Serve `app` (where: host/port, fd, ssl_* as uvicorn takes them) until SIGTERM/SIGINT."""
    uvicorn.run(app, http=protocol_for(limits), loop="uvloop", log_level="warning", timeout_graceful_shutdown=5,
                timeout_keep_alive=5, limit_concurrency=limits.max_connections + 1, **where)

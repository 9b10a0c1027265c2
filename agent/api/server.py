"""uvicorn, run with what a public-facing server needs and uvicorn leaves out: a deadline for each
request head and a cap on open connections that sheds the idle ones first.

uvicorn has a keep-alive timeout, but it is cancelled by the first byte of the next request, and
nothing times a connection that never finishes its head: 1,100 connections that each sent half a
request held the agent's descriptors until no other user got in. Here each connection must have
sent a whole request head `header_timeout_s` after it opened (or after its last response), and
when `max_connections` are open, a new one closes the oldest connection still waiting for its head
(never one whose request is being served, such as an event stream). Someone who opens connections
without finishing them only ever pushes out their own. The body's own timeout and size are the
ASGI guard's (`guard.py`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..quotas import ApiLimits


class GuardedH11Protocol(H11Protocol):
    """One connection; `limits` is set on the subclass `protocol_for` makes."""

    limits: ApiLimits = ApiLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timer: asyncio.TimerHandle | None = None
        self.opened_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.opened_at = self.loop.time()
        if len(self.connections) > self.limits.max_connections:
            self._shed()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._watch_head()

    def _watch_head(self) -> None:
        """Armed while the peer owes a request head; off once it has sent one."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self.head_timer is None:
            self.opened_at = self.loop.time()
            self.head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)
        elif not waiting:
            self._disarm()

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def _shed(self) -> None:
        """Close the oldest connection that has not sent a whole request head (this one if none)."""
        waiting = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c is not self
                   and c.conn.their_state is h11.IDLE]
        victim = min(waiting, key=lambda c: c.opened_at, default=self)
        victim.transport.close()
        self.connections.discard(victim)


def protocol_for(limits: ApiLimits) -> type[GuardedH11Protocol]:
    return type("AgentH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def run(app: Any, limits: ApiLimits, **where: Any) -> None:
    """Serve `app` (where: host/port, fd, ssl_* as uvicorn takes them) until SIGTERM/SIGINT."""
    uvicorn.run(app, http=protocol_for(limits), log_level="warning", timeout_graceful_shutdown=5,
                timeout_keep_alive=5, limit_concurrency=limits.max_connections + 1, **where)

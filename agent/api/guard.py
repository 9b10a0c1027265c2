"""The ASGI middleware in front of every route: a request's size, its caller and its body's
memory are settled here, before FastAPI reads or parses a byte of the body.

Order, cheapest refusal first:
1. `Content-Length` above the route's cap: 413, nothing read, nobody authenticated;
2. the bearer token (a digest compare): 401 before the body is read;
3. the body's bytes are reserved in a budget shared by all requests (a request that does not fit
   waits for its turn, then gets a 503), read with a timeout per chunk (408), counted against the
   cap while they come (413: chunked bodies have no length to check up front), and handed to the
   app in one piece; the reservation is released when the response has been sent.
The principal found in step 2 goes to the route in `scope["state"]`, so the token is checked once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..errors import AgentError, BadRequest, PayloadTooLarge, RequestTimeout, Unavailable
from ..quotas import ApiLimits
from .errors import status_of
from .hot import HotRoutes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Authenticate = Callable[[str | None], Awaitable[Any]]

PUBLIC = frozenset({"/v1/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
#: calls whose body may carry uploads (a job's or a session's); every other body is small
LARGE_BODY = ("/v1/jobs", "/v1/sessions")


class BodyBudget:
    """Bytes of request bodies the agent holds at once, over all requests."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.waiting = 0          # requests waiting for room
        self._freed: asyncio.Condition | None = None

    async def take(self, size: int, wait_s: float) -> None:
        """Reserve `size` bytes; a body that fits while nobody waits takes them at once (no lock,
        no timer: the event loop runs one coroutine at a time), else it waits its turn."""
        size = min(size, self.total)
        if self.waiting == 0 and self.used + size <= self.total:
            self.used += size
            return
        if self._freed is None:
            self._freed = asyncio.Condition()
        self.waiting += 1
        try:
            async with asyncio.timeout(wait_s), self._freed:
                await self._freed.wait_for(lambda: self.used + size <= self.total)
                self.used += size
        except TimeoutError:
            raise Unavailable(f"the agent is busy reading other requests' bodies ({self.used >> 20} MB "
                              f"held); retry in a moment") from None
        finally:
            self.waiting -= 1

    async def give(self, size: int) -> None:
        size = min(size, self.total)
        self.used -= size
        if self.waiting and self._freed is not None:
            async with self._freed:
                self._freed.notify_all()


def body_cap(limits: ApiLimits, method: str, path: str) -> int:
    """The largest body a call may send."""
    if method == "POST" and (path in LARGE_BODY or path.startswith("/v1/sessions/")):
        return limits.max_request_mb << 20
    return limits.max_small_request_kb << 10


class RequestGuard:
    """`hot`: the calls answered past FastAPI's router when they come in their plain form (hot.py)."""

    def __init__(self, app: ASGIApp, limits: ApiLimits, authenticate: Authenticate,
                 hot: HotRoutes | None = None) -> None:
        self.app = app
        self.limits = limits
        self.authenticate = authenticate
        self.hot = hot
        self.budget = BodyBudget(limits.body_budget_mb << 20)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reserved = 0
        headers = _headers(scope)
        who, body = None, None
        try:
            cap, length = self._admit(scope, headers)
            if scope["path"] not in PUBLIC and scope["path"].startswith("/v1/"):
                who = scope.setdefault("state", {})["principal"] = await self.authenticate(headers.get("authorization"))
            if _has_body(headers, length):
                await self.budget.take(cap if length is None else length, self.limits.body_wait_s)
                reserved = cap if length is None else length
                body = await self._read(receive, cap)
                receive = _replay(body, receive)
        except AgentError as exc:
            if reserved:
                await self.budget.give(reserved)
            await _refuse(send, exc)
            return
        try:
            if (self.hot is None or not self.hot.wants(scope)
                    or not await self.hot.serve(scope, headers, body, who, receive, send)):
                await self.app(scope, receive, send)
        finally:
            if reserved:
                await self.budget.give(reserved)

    def _admit(self, scope: Scope, headers: dict[str, str]) -> tuple[int, int | None]:
        """(the call's body cap, the announced length); 413 when the length is over the cap."""
        cap = body_cap(self.limits, scope["method"], scope["path"])
        length = _content_length(headers)
        if length is not None and length > cap:
            raise PayloadTooLarge(f"the request body is {length} bytes; this call takes at most {cap} "
                                  f"(api.max_request_mb / api.max_small_request_kb in the agent's config)")
        return cap, length

    async def _read(self, receive: Receive, cap: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                async with asyncio.timeout(self.limits.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(f"the request body stalled for {self.limits.body_timeout_s:g} s") from None
            if message["type"] == "http.disconnect":
                raise RequestTimeout("the client went away while sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise PayloadTooLarge(f"the request body is over {cap} bytes, the most this call takes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    """Lower-case names; a repeated header keeps its first value (latin-1, as HTTP has it)."""
    out: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


def _content_length(headers: dict[str, str]) -> int | None:
    text = headers.get("content-length")
    if text is None:
        return None
    if not text.strip().isdigit():
        raise BadRequest("Content-Length is not a number")
    return int(text)


def _has_body(headers: dict[str, str], length: int | None) -> bool:
    if length is not None:
        return length > 0
    return "chunked" in headers.get("transfer-encoding", "").lower()


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body in one message, then whatever the connection says next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


async def _refuse(send: Send, exc: AgentError) -> None:
    status, code = status_of(exc)
    body = json.dumps({"error": {"code": code, "message": exc.message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status in (408, 413):
        headers.append((b"connection", b"close"))  # the rest of the body is never read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

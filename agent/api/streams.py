"""Event streams held open per user: each one is a connection and a reader of a log for as long as
the job runs, so one user's streams are counted, and the count is given back when the response
ends, however it ends (finished, client gone, cancelled)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fastapi.responses import StreamingResponse

from ..errors import TooMany
from ..jobs.loglines import LogRange

Body = AsyncIterator[bytes] | AsyncIterator[memoryview] | AsyncIterator[memoryview | LogRange]
ZEROCOPY = "http.response.zerocopysend"  # the ASGI extension: a file's range sent by the server


class StreamQuota:
    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.open: Counter[str] = Counter()

    def response(self, owner: str, body: Body, media_type: str) -> StreamingResponse:
        """A streaming response that counts against `owner` until it is over (429 when full)."""
        if self.open[owner] >= self.per_user:
            raise TooMany(f"you hold {self.open[owner]} event streams open, the most one user may "
                          f"(quotas.streams_per_user); close some first")
        self.open[owner] += 1
        return _Counted(body, media_type=media_type, on_end=lambda: self._release(owner))

    def _release(self, owner: str) -> None:
        self.open[owner] -= 1
        if self.open[owner] <= 0:
            del self.open[owner]


async def _first_of(*work: Coroutine[Any, Any, None]) -> None:
    """Run `work` at once until one of them returns; the others are cancelled and waited for
    (their clean-up runs before this returns); an exception of any is raised."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(w) for w in work]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        if pending := [task for task in tasks if not task.done()]:
            await asyncio.wait(pending)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


class _Counted(StreamingResponse):
    def __init__(self, body: Body, media_type: str, on_end: Any) -> None:
        super().__init__(body, media_type=media_type)
        self._on_end = on_end

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Starlette's for ASGI before 2.4 (uvicorn's), without anyio's task group: the stream and
        a watch for the client's disconnect, each ending the other (anyio's cancel formatted the
        task's repr, callbacks and their source lines, on every stream's end)."""
        self._zerocopy = ZEROCOPY in scope.get("extensions", {})
        try:
            await _first_of(self.stream_response(send), self.listen_for_disconnect(receive))
            if self.background is not None:
                await self.background()
        finally:
            self._on_end()

    async def stream_response(self, send: Any) -> None:
        """Starlette's, except that a log's range goes to a server that sends files itself as that
        (server.py: sendfile, the bytes never read into the agent) and to any other read in pieces."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            if not isinstance(chunk, LogRange):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            elif self._zerocopy:
                await send({"type": ZEROCOPY, "file": chunk.fd, "offset": chunk.offset, "count": chunk.count,
                            "more_body": True})
            else:
                for piece in chunk.pieces():
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

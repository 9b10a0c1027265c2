"""Event streams held open per user: each one is a connection and a reader of a log for as long as
the job runs, so one user's streams are counted, and the count is given back when the response
ends, however it ends (finished, client gone, cancelled)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
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


class _Counted(StreamingResponse):
    def __init__(self, body: Body, media_type: str, on_end: Any) -> None:
        super().__init__(body, media_type=media_type)
        self._on_end = on_end

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self._zerocopy = ZEROCOPY in scope.get("extensions", {})
        try:
            await super().__call__(scope, receive, send)
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

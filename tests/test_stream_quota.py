"""An event stream's response (agent/api/streams.py) ends when its client leaves, though its job
says nothing more: the log's reader is closed and the user's stream count given back. It ends with
its body otherwise, and a body's error is the response's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from joblet_agent.api.streams import StreamQuota
from waiting import run_coroutine

SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}, "extensions": {}}


def test_a_silent_stream_ends_when_its_client_leaves_and_is_given_back() -> None:
    quota = StreamQuota(1)
    closed: list[str] = []
    sent: list[dict[str, Any]] = []

    async def silent() -> AsyncIterator[bytes]:
        try:
            yield b'{"seq":1,"type":"status"}\n'
            await asyncio.sleep(3600)  # a job that runs on without a word
            yield b"never"
        finally:
            closed.append("reader")

    async def main() -> None:
        told = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if told:
                return told.pop()
            await asyncio.sleep(0.05)  # the client leaves a moment later
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asyncio.wait_for(quota.response("owner", silent(), "application/x-ndjson")(SCOPE, receive, send), 30)

    run_coroutine(main())
    assert closed == ["reader"] and not quota.open
    assert [m.get("body") for m in sent[1:]] == [b'{"seq":1,"type":"status"}\n']


def test_a_stream_ends_with_its_body_and_a_body_error_is_raised() -> None:
    quota = StreamQuota(2)

    async def body(fail: bool) -> AsyncIterator[bytes]:
        yield b'{"seq":1,"type":"exit"}\n'
        if fail:
            raise OSError("the log is gone")

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # the client stays
        return {"type": "http.disconnect"}

    async def run(fail: bool) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asyncio.wait_for(quota.response("owner", body(fail), "application/x-ndjson")(SCOPE, receive, send), 30)
        return sent

    sent = run_coroutine(run(False))
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    with pytest.raises(OSError, match="the log is gone"):
        run_coroutine(run(True))
    assert not quota.open

"""The one way tests wait: poll a condition with a generous bound that only guards against hangs.

Never a timing claim: a test that needs "fast enough" belongs in benchmarks/.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.05,
               message: str | Callable[[], object] = "") -> T:
    """Poll `predicate()` until it is truthy and return that value. After `timeout` seconds, fail
    with `message` (a callable is asked at that moment, to show the state that was waited on). A
    predicate may raise AssertionError itself to stop early (e.g. the job ended)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            said = message() if callable(message) else message
            raise AssertionError(f"not within {timeout}s: {said or predicate}")
        time.sleep(interval)


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end on a loop of its own. asyncio.run would leave the main thread without a
    current event loop, which code of later tests (tornado's websocket client, closing a hub
    kernel's connection) still asks for."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()

"""Descriptors: the agent raises its own soft limit at start (systemd gives services 1,024), and
what runs on its event loop survives running out of them anyway (EMFILE/ENFILE), without leaving a
job unfinished and without writing a traceback per attempt to the log.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
SHORTAGE = (errno.EMFILE, errno.ENFILE)
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 2.0


def raise_soft_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; returns (the soft limit before, the one now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return soft, hard
    return soft, soft


def is_shortage(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in SHORTAGE


class QuietLog:
    """Say each kind of trouble once, then at most once per `every_s` with how often it happened."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._seen: dict[str, tuple[float, int]] = {}

    def say(self, kind: str, message: str) -> None:
        now = time.monotonic()
        last, count = self._seen.get(kind, (0.0, 0))
        if last and now - last < self.every_s:
            self._seen[kind] = (last, count + 1)
            return
        more = f" ({count} more since the last report)" if count else ""
        print(f"joblet-agent: {message}{more}", file=sys.stderr, flush=True)
        self._seen[kind] = (now, 0)


QUIET = QuietLog()


async def until_descriptors(fn: Callable[[], T | Awaitable[T]], what: str) -> T:
    """`fn()` (awaited if it gives an awaitable), retried with a growing pause for as long as it
    fails for want of descriptors."""
    pause = RETRY_FIRST_S
    while True:
        try:
            result = fn()
            return await result if inspect.isawaitable(result) else result  # type: ignore[return-value]
        except OSError as exc:
            if not is_shortage(exc):
                raise
            QUIET.say("fd-shortage", f"out of descriptors ({exc.strerror}) while {what}; retrying")
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX_S)


def quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's handler: one report per kind of error and minute (the accept loop hitting
    EMFILE would otherwise print a traceback every second)."""
    exc = context.get("exception")
    kind = f"{context.get('message')}:{type(exc).__name__}:{getattr(exc, 'errno', '')}"
    text = f"{context.get('message')}: {exc!r}" if exc else str(context.get("message"))
    QUIET.say(kind, text)

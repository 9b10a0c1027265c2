"""A small single-threaded event loop for a job's holder: readers, writers and timers on `selectors`.

The holder is a fork of the warm launcher and stays single-threaded (it forks the job's init), so
it cannot run asyncio's loop it inherited; this one offers the part of asyncio's interface that
`control.Channel` uses (`add_reader`, `add_writer`, ...) and `call_later`.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import time
from collections.abc import Callable
from typing import Any


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SelectorLoop:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._readers: dict[int, Callable[[], None]] = {}
        self._writers: dict[int, Callable[[], None]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
        self._readers[fd] = lambda: callback(*args)
        self._update(fd)

    def remove_reader(self, fd: int) -> bool:
        found = self._readers.pop(fd, None) is not None
        self._update(fd)
        return found

    def add_writer(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
        self._writers[fd] = lambda: callback(*args)
        self._update(fd)

    def remove_writer(self, fd: int) -> bool:
        found = self._writers.pop(fd, None) is not None
        self._update(fd)
        return found

    def _update(self, fd: int) -> None:
        events = (selectors.EVENT_READ if fd in self._readers else 0) | \
                 (selectors.EVENT_WRITE if fd in self._writers else 0)
        try:
            self.selector.modify(fd, events) if events else self.selector.unregister(fd)
        except KeyError:
            if events:
                self.selector.register(fd, events)
        except (ValueError, OSError):
            pass  # a descriptor already closed: nothing to watch

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def run_once(self, max_wait: float | None = None) -> None:
        """Wait for the next descriptor or timer (at most `max_wait`), then run what is due."""
        wait = max_wait
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if self._timers:
            until = max(0.0, self._timers[0][0] - time.monotonic())
            wait = until if wait is None else min(wait, until)
        for key, mask in self.selector.select(wait):
            fd = key.fd
            if mask & selectors.EVENT_READ and fd in self._readers:
                self._readers[fd]()
            if mask & selectors.EVENT_WRITE and fd in self._writers:
                self._writers[fd]()
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()

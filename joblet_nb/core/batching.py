"""Job output written in batches, by time and size: what keeps a chatty job from freezing a browser.

Every write that reaches a notebook's output area is one message to the frontend, and each one
re-renders the cell's output: writing after every agent event sent 2,739 messages for a job that
printed 200,000 lines. A batch is written when the first of its bytes has waited `interval` seconds
or `max_bytes` are waiting, whichever comes first; batches end at a line end where there is one
(a partial line waits for its end until the time rule frees it); stdout and stderr keep their order
(a change of stream writes what the other stream had first).
"""

from __future__ import annotations

import time
from typing import Callable

Writer = Callable[[str, list[str]], None]   # (stream name "stdout" | "stderr", the batch's text in pieces)
INTERVAL_S = 0.1
MAX_BYTES = 64 * 1024


class OutputBatcher:
    """Collects one stream at a time; `write(kind, pieces)` is called once per batch, with the
    batch's text in pieces as they came (written one after the other, then flushed once): a large
    output's events are about 500 KB each, and joining them and then cutting the join at its
    last line end copied each twice; now only the piece with the line end is cut."""

    def __init__(self, write: Writer, interval: float = INTERVAL_S, max_bytes: int = MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic):
        self.write = write
        self.interval = interval
        self.max_bytes = max_bytes
        self.clock = clock
        self.batches = 0
        self._kind = ""
        self._parts: list[str] = []
        self._size = 0
        self._since: float | None = None   # when the oldest unwritten text arrived

    def add(self, kind: str, data: str) -> None:
        if not data:
            return
        if self._parts and kind != self._kind:
            self.flush()
        if not self._parts:
            self._since = self.clock()
        self._kind = kind
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self.max_bytes:
            self._write(line_aligned=True)

    def due_in(self) -> float | None:
        """Seconds until the time rule writes what waits; None when nothing waits."""
        if self._since is None:
            return None
        return max(0.0, self._since + self.interval - self.clock())

    def tick(self) -> None:
        """Write what has waited `interval` (call when `due_in()` has run out)."""
        due = self.due_in()
        if due is not None and due <= 0:
            self._write(line_aligned=True)

    def flush(self) -> None:
        """Write everything that waits, partial line included (the job ended, or a detach)."""
        self._write(line_aligned=False)

    def _write(self, line_aligned: bool) -> None:
        parts = self._parts
        if not parts:
            return
        at, cut = len(parts) - 1, len(parts[-1])
        if line_aligned:
            while (cut := parts[at].rfind("\n") + 1) == 0 and at > 0:
                at -= 1
            if cut == 0:
                at, cut = len(parts) - 1, len(parts[-1])  # no line end at all: a prompt or one huge line still shows
        piece = parts[at]
        before = parts[:at] if at < 2 else ["".join(parts[:at])]  # many small events: one write
        head = before + [piece if cut == len(piece) else piece[:cut]]
        rest = ([piece[cut:]] if cut < len(piece) else []) + parts[at + 1:]
        self.write(self._kind, head)
        self.batches += 1
        self._parts = rest
        self._size = sum(map(len, rest))
        self._since = self.clock() if rest else None

"""A session's input on the node: frames from the agent on the step's stdin become bytes on the
sandbox's stdin (the runner's requests) and signals for its program (a cell's interrupt).

Nothing blocks: what the sandbox has not read yet waits in a bounded buffer, and a sandbox that
does not read is stopped. The end of the step's stdin (the agent closed it, or srun went away)
closes the sandbox's stdin once everything before it was delivered.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import signal
from collections.abc import Callable

from ..cluster import wire

MAX_PENDING = 64 << 20
SIGNALS = (signal.SIGINT,)   # what an agent may send a program through this channel


class InputRelay:
    def __init__(self, sandbox_stdin: int, send_signal: Callable[[int], None], overflow: Callable[[], None]) -> None:
        self.target: int | None = sandbox_stdin
        self.send_signal = send_signal
        self.overflow = overflow
        self.reader = wire.FrameReader(wire.INPUT_SHAPES)
        self.pending = bytearray()
        self.eof = False
        os.set_blocking(sandbox_stdin, False)

    def from_agent(self, data: bytes) -> None:
        """Bytes read from the step's stdin (b"": its end)."""
        if not data:
            self.eof = True
        else:
            try:
                frames = self.reader.feed(data)
            except wire.FrameError:
                frames, self.eof = [], True  # a garbled channel ends the input, not the node side
            for frame in frames:
                self._take(frame)
        self.flush()

    def _take(self, frame: dict) -> None:
        if frame["k"] == "signal":
            if frame["sig"] in SIGNALS:
                self.send_signal(frame["sig"])
            return
        try:
            self.pending += base64.b64decode(frame["b"], validate=True)
        except (binascii.Error, ValueError):
            return
        if len(self.pending) > MAX_PENDING:
            self.pending.clear()
            self.overflow()

    @property
    def wants_to_write(self) -> bool:
        return self.target is not None and bool(self.pending)

    def flush(self) -> None:
        """As much as the sandbox's stdin takes now; closed once the agent's input has ended."""
        if self.target is None:
            return
        try:
            while self.pending:
                del self.pending[:os.write(self.target, self.pending)]
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self.pending.clear()  # the program closed its input: what it did not read is dropped
        if self.eof and not self.pending:
            self.close()

    def close(self) -> None:
        if self.target is not None:
            os.close(self.target)
            self.target = None

"""Where an event log's lines are, found without reading them all: the seq and type at a line's
head (the writers put them first, in that order), the end of the complete lines a log holds and the
last seq, both from its last bytes. What lies between is sent as a `LogRange`, never read into the
agent."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HEAD = re.compile(rb'\{"seq":(\d+),"type":"([a-z_]+)"')
PIECE = 2 << 20         # a range read for a peer that cannot take it from the file, in pieces this large
TAIL_PROBE = 4096       # a range's end is looked for in the log's last bytes (a writer ends each write at a line end)


@dataclass(frozen=True)
class LogRange:
    """Complete lines of an event log: `count` bytes at `offset` of the open descriptor `fd`."""

    fd: int
    offset: int
    count: int

    def pieces(self, size: int = PIECE) -> Iterator[bytes]:
        """The range read in pieces of at most `size` bytes (for a peer that cannot take it
        without a read: TLS, a test client); a piece need not end at a line end."""
        pos, end = self.offset, self.offset + self.count
        while pos < end:
            piece = os.pread(self.fd, min(size, end - pos), pos)
            if not piece:
                raise OSError(f"event log shorter than its range ({pos} of {end} bytes)")
            pos += len(piece)
            yield piece


def lines_end(fd: int, offset: int) -> tuple[int, bool]:
    """Where the complete lines from `offset` end (`offset` if none is there), and whether the last
    of them is an exit event (seen where its head lies within the bytes read): the log's last bytes
    are read and, only where its last line is still being written, as much as that takes."""
    size = os.fstat(fd).st_size
    probe = TAIL_PROBE
    while size > offset:
        start = max(offset, size - probe)
        data = os.pread(fd, size - start, start)
        cut = data.rfind(b"\n")
        if cut >= 0:
            begin = data.rfind(b"\n", 0, cut) + 1
            head = line_head(data, begin, cut + 1) if begin > 0 or start == offset else None
            return start + cut + 1, head is not None and head[1] == "exit"
        if start == offset:
            break
        probe *= 16
    return offset, False


def line_head(data: bytes, start: int, end: int) -> tuple[int, str] | None:
    """The seq and type of the line data[start:end] (the writers put them first, in that order);
    None for a blank line."""
    m = HEAD.match(data, start, end)
    if m is not None:
        return int(m.group(1)), m.group(2).decode()
    line = data[start:end]
    if not line.strip():
        return None
    event = json.loads(line)
    return int(event["seq"]), str(event["type"])


def last_seq(path: Path) -> int:
    """The seq of the log's last complete line, read from its end (a log can be a gigabyte)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        window = 64 << 10
        while True:
            start = max(0, size - window)
            f.seek(start)
            data = f.read(size - start)
            end = data.rfind(b"\n") + 1
            begin = data.rfind(b"\n", 0, max(0, end - 1)) + 1
            if begin > 0 or start == 0:
                break
            window *= 4
    head = line_head(data, begin, end)
    if head is None:
        return 0 if start == 0 and not data.strip() else last_seq_slow(path)
    return head[0]


def last_seq_slow(path: Path) -> int:
    last = 0
    with open(path, "rb") as f:
        for line in f:
            head = line_head(line, 0, len(line)) if line.endswith(b"\n") else None
            last = head[0] if head is not None else last
    return last

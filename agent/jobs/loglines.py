"""Where an event log's lines are, found without reading them all: the seq and type at a line's
head (the writers put them first, in that order), the end of the complete lines a log holds and the
last seq, both from its last bytes. What lies between is sent as a `LogRange`, never read into the
agent, or read a bounded step at a time."""

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


def read_lines(fd: int, offset: int, at_most: int) -> tuple[int, bytes, int, bool]:
    """(new offset, what was read, where its complete lines end, whether more is to be read at
    once); `fd` is closed. A step (`at_most`) holds at least one line: a line longer than a step (a
    holder's read of binary output, escaped) is read on to its end. A read asks for what the file
    holds, not for a whole step: a 2 MiB buffer, allocated and shrunk, cost a small log's follower
    more than the read (about 20 us against 2.5 a wake-up)."""
    try:
        data = os.pread(fd, max(0, min(at_most, os.fstat(fd).st_size - offset)), offset)
        more = len(data) == at_most
        end = data.rfind(b"\n") + 1
        if end == 0 and more:
            data = long_line(fd, offset, data, at_most)
            end = len(data)
    finally:
        os.close(fd)
    return offset + end, data, end, more and end > 0  # a line still being written: wait for it


def ranged_item(fd: int, offset: int, end: int, range_from: int, at_most: int) -> tuple[memoryview | LogRange, bool]:
    """The complete lines between `offset` and `end` as the HTTP layer takes them, and whether they
    reach `end`: `range_from` bytes or more (0: never; a live log) as a `LogRange`, sent without a
    read; else read, a step (`at_most`, or the one line that is longer) at a time: what a job wrote
    while its follower waited for a slow reader can be most of its output, and the follower holds
    one step of it, not all."""
    if range_from and end - offset >= range_from:
        return LogRange(fd, offset, end - offset), True
    data = os.pread(fd, min(end - offset, at_most), offset)
    if len(data) == end - offset:
        return memoryview(data), True
    cut = data.rfind(b"\n") + 1
    if cut == 0:
        data = long_line(fd, offset, data, at_most)
        cut = len(data)
    return memoryview(data)[:cut], not 0 < cut < end - offset


def long_line(fd: int, offset: int, start: bytes, at_most: int) -> bytes:
    """The line that begins with `start` (no newline in it) up to its newline, read `at_most` bytes
    at a time; b"" while its end is not written yet."""
    parts, pos = [start], offset + len(start)
    while part := os.pread(fd, at_most, pos):
        cut = part.find(b"\n") + 1
        if cut:
            parts.append(part[:cut])
            return b"".join(parts)
        parts.append(part)
        pos += len(part)
    return b""


def lines_after(data: bytes, size: int, last: int) -> tuple[memoryview, int, bool]:
    """The lines of data[:size] with seq > last, up to and with an exit event (a view); the last
    seq; whether it ended."""
    pos, first, cut, ended = 0, -1, size, False
    while pos < size:
        end = data.index(b"\n", pos) + 1
        head = line_head(data, pos, end)
        if head is not None and head[0] > last:
            first = pos if first < 0 else first
            last = head[0]
            if head[1] == "exit":
                cut, ended = end, True
                break
        pos = end
    return memoryview(data)[first:cut] if first >= 0 else memoryview(b""), last, ended

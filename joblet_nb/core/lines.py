"""An event stream's NDJSON lines, read from the HTTP response with as few copies and new pages as
the stream allows.

A large output arrives as chunks of about 2 MiB. Read through urllib3, each chunk is a new bytes
object (fresh pages: the client's page faults, about 70k per GB of stdout), and a line split
across two chunks is joined into a third. Where the response is a plain chunked body on a
connection urllib3 has not read from yet (every stream from an agent), `chunked_lines` reads the
chunks straight from the connection's buffered reader into one buffer that is reused for the
whole stream, and yields each line as a view of it: the bytes are copied once, from the socket,
and a line is decoded where it lies. Anything else (a compressed body, a body with a length, a
connection object of another kind) goes through `ndjson_lines` over `iter_content`, as before.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

import requests

BUFFER = 4 << 20        # the reused buffer at its largest; a line longer than this is gathered in pieces
FIRST_BUFFER = 64 << 10  # ... at first (grown fourfold each time it fills)
MAX_SIZE_LINE = 1024    # a chunk's size line (hex digits and extensions), or a trailer line


def response_lines(resp: requests.Response) -> Iterator[bytes | memoryview]:
    """The non-blank lines of an event stream's body, each as soon as its newline has come. A view
    is valid until the next line is asked for. A connection that fails or a body that breaks the
    chunked framing raises requests' ConnectionError or ChunkedEncodingError, as urllib3 does."""
    reader = raw_chunked_reader(resp)
    if reader is None:
        return ndjson_lines(resp.iter_content(chunk_size=None))
    return chunked_lines(reader)


def raw_chunked_reader(resp: requests.Response) -> BinaryIO | None:
    """The buffered reader of the response's connection, positioned at its body's first chunk,
    when the body is chunked, not compressed and untouched; None otherwise."""
    inner = getattr(resp.raw, "_fp", None)  # http.client's response, under urllib3's
    reader = getattr(inner, "fp", None)
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if (reader is None or encoding != "identity" or getattr(inner, "chunked", False) is not True
            or getattr(inner, "chunk_left", 0) is not None
            or getattr(resp.raw, "_fp_bytes_read", 0) or not hasattr(reader, "readinto")):
        return None
    return reader  # type: ignore[no-any-return]


def chunked_lines(reader: BinaryIO, limit: int = BUFFER, size: int = FIRST_BUFFER) -> Iterator[bytes | memoryview]:
    """The lines of a chunked body read from `reader` into one buffer, of `size` bytes at first
    and grown (to at most `limit`) each time it fills: a trivial job's stream never makes the
    large one (4 MiB zeroed and faulted in per stream, on a cell's critical path). A line that
    lies in the buffer is a view of it; one longer than the largest buffer is gathered and joined.
    A piece without its newline at the body's end is dropped (the agent ends every line: the
    stream was cut there, and the reconnect asks for everything after the last whole event)."""
    size = min(size, limit)
    buf = bytearray(size)
    view = memoryview(buf)
    start = end = 0          # buf[start:end]: the beginning of a line whose newline has not come
    gathered: list[bytes] = []  # the beginning of a line longer than the buffer
    try:
        while left := _chunk_size(reader):
            while left:
                if end == size and size < limit:  # full: a larger one, with what waits at its front
                    size = min(limit, size * 4)
                    buf, view = bytearray(size), view[start:end]
                    buf[:len(view)] = view
                    start, end, view = 0, len(view), memoryview(buf)
                elif end == size:  # no room after what waits: move it to the front, or set it aside
                    if start == 0:
                        gathered.append(bytes(view[:end]))
                    elif end > start:
                        view[:end - start] = bytes(view[start:end])
                    start, end = 0, end - start if start else 0
                got = reader.readinto(view[end:min(size, end + left)])
                if not got:
                    raise requests.exceptions.ChunkedEncodingError("the stream ended inside a chunk")
                left -= got
                scan, end = end, end + got
                while (newline := buf.find(b"\n", scan, end)) >= 0:
                    line: bytes | memoryview = view[start:newline]
                    if gathered:
                        gathered.append(bytes(line))
                        line = b"".join(gathered)
                        gathered.clear()
                    if len(line) > 2 or bytes(line).strip():
                        yield line
                    start = scan = newline + 1
                if start == end:
                    start = end = 0  # all of it used: the next read starts at the front
            _expect_crlf(reader)
        while _read_line(reader) not in (b"\r\n", b"\n", b""):
            pass  # trailers
    except requests.exceptions.RequestException:
        raise  # (an OSError too)
    except OSError as exc:  # a reset, a timeout (socket.timeout is an OSError)
        raise requests.exceptions.ConnectionError(exc) from None


def _read_line(reader: BinaryIO) -> bytes:
    line = reader.readline(MAX_SIZE_LINE + 1)
    if len(line) > MAX_SIZE_LINE:
        raise requests.exceptions.ChunkedEncodingError("a chunked body's framing line is too long")
    return line


def _chunk_size(reader: BinaryIO) -> int:
    line = _read_line(reader)
    try:
        size = int(line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise requests.exceptions.ChunkedEncodingError(f"not a chunk's size line: {line[:40]!r}") from None
    if size < 0:
        raise requests.exceptions.ChunkedEncodingError(f"not a chunk's size line: {line[:40]!r}")
    return size


def _expect_crlf(reader: BinaryIO) -> None:
    if _read_line(reader) not in (b"\r\n", b"\n"):
        raise requests.exceptions.ChunkedEncodingError("a chunk not ended by CRLF")


def ndjson_lines(chunks: Iterator[bytes]) -> Iterator[bytes | memoryview]:
    """The non-blank lines of a byte stream, each as soon as its newline has come. A line that
    lies within one chunk is a view of it (no copy; the agent sends whole lines per chunk, a
    megabyte of output each); one split across chunks is joined once. `bytes.find` is memchr,
    where `splitlines` (iter_lines) looks at every byte for several line ends. A piece without
    its newline at the end is dropped: the agent ends every line, so the stream was cut there,
    and the reconnect asks for everything after the last whole event again."""
    parts: list[bytes] = []
    for chunk in chunks:
        view, start = memoryview(chunk), 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if parts:
                parts.append(chunk[start:end])
                line: bytes | memoryview = b"".join(parts)
                parts.clear()
            else:
                line = view[start:end]
            if len(line) > 2 or bytes(line).strip():
                yield line
            start = end + 1
        if start < len(chunk):
            parts.append(chunk[start:])

"""The control channel between the agent and a job's holder: one JSON object a line on a unix socket.

A holder answers on `holder.sock` in its job's state folder (root's, mode 0700), and on the socket
pair the agent handed it with the job; both carry the same messages. The agent asks:

  {"op": "hello"}                           the holder answers `hello` (below) and its own pidfd
  {"op": "stop", "reason": R, "grace": S}   SIGTERM to the job, SIGKILL after S seconds
  {"op": "go"} / {"op": "abort", "message": M}   the agent's outside set-up (the network) is done / failed
  {"op": "signal", "signal": N}             a signal to the job's init (it forwards it)
  {"op": "input", "data": TEXT}             input for the job (its output translator decides when
                                            it goes to stdin: a session's cells, one at a time)

and the holder tells:

  {"ev": "hello", "protocol": 1, "job_id", "token", "pid", "uid", "state", "seq", "started_at",
   "stop_reason", "boot_id", "translator": {...}}
  {"ev": "seq", "seq": N}                   the log holds every event up to N
  {"ev": "running", "at": T}                the job's command started
  {"ev": "notice", "data": {...}}           what its output translator tells (a session's cell ended)
  {"ev": "ended"}                           outcome.json is written and the log let go; it exits next
                                            (an agent that misses this sees the pidfd end instead)

Both ends run this module's `Channel` on an event loop with `add_reader`/`add_writer` (asyncio's in
the agent, `miniloop.SelectorLoop` in the holder). Lines are bounded; a peer that sends a longer
one is cut off.
"""

from __future__ import annotations

import array
import json
import os
import socket
from collections.abc import Callable
from typing import Any, Protocol

PROTOCOL = 1
SOCKET_NAME = "holder.sock"
HOLDER_NAME = "holder.json"   # the holder's pid, protocol and boot id, written when it takes its job
HOLDER_TEMPORARY = HOLDER_NAME + ".tmp"  # written whole first (a spare job folder holds it already: jobs/spare.py)
MAX_LINE = 64 << 20
MAX_UNSENT = 64 << 20    # a peer that reads nothing is cut off past this (as jnb-holder does)
MAX_FDS = 4
READ_SIZE = 256 << 10

Message = dict[str, Any]


class Loop(Protocol):
    def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> None: ...
    def remove_reader(self, fd: int) -> bool: ...
    def add_writer(self, fd: int, callback: Callable[..., Any], *args: Any) -> None: ...
    def remove_writer(self, fd: int) -> bool: ...


class Channel:
    """One connection: whole lines in (with any descriptors passed along), buffered lines out."""

    def __init__(self, sock: socket.socket, loop: Loop, on_message: Callable[["Channel", Message, list[int]], None],
                 on_close: Callable[["Channel"], None], received: bytes = b"") -> None:
        sock.setblocking(False)
        self.sock = sock
        self.loop = loop
        self.on_message = on_message
        self.on_close = on_close
        self.closed = False
        self._in = bytearray(received)  # read already by `ask`, not yet delivered
        self._out = bytearray()
        self._fds: list[int] = []
        loop.add_reader(sock.fileno(), self._readable)

    def send(self, message: Message, fds: list[int] | None = None) -> None:
        """Queue a message; one that passes descriptors goes out at once, ahead of nothing queued."""
        if self.closed:
            return
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        if fds:
            # descriptors ride on the first byte of their line, so nothing may be queued before it
            # (a `hello` answer is the first thing on its connection: the queue is empty then)
            try:
                if self._out:
                    raise BlockingIOError
                sent = self.sock.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            except OSError:
                return self.close()
            line = line[sent:]
        self._out += line
        self._flush()
        if len(self._out) > MAX_UNSENT:
            self.close()  # a peer that never reads must not grow the holder without bound

    def _flush(self) -> None:
        try:
            while self._out:
                sent = self.sock.send(self._out)
                del self._out[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return self.close()
        if self.closed:
            return
        self.loop.remove_writer(self.sock.fileno())
        if self._out:
            self.loop.add_writer(self.sock.fileno(), self._flush)

    def _readable(self) -> None:
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(READ_SIZE, socket.CMSG_SPACE(MAX_FDS * 4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.close()
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self._fds.extend(fds)
        if not data:
            return self.close()
        self._in += data
        self.drain()

    def drain(self) -> None:
        """Deliver every complete line received so far."""
        while not self.closed and (end := self._in.find(b"\n")) >= 0:
            line = bytes(self._in[:end])
            del self._in[:end + 1]
            self._deliver(line)
        if len(self._in) > MAX_LINE:
            self.close()

    def _deliver(self, line: bytes) -> None:
        fds, self._fds = self._fds, []
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):  # garbage, or nested deeper than the parser recurses
            for fd in fds:
                os.close(fd)
            return
        self.on_message(self, message, fds)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._out = bytearray()
        self.loop.remove_reader(self.sock.fileno())
        self.loop.remove_writer(self.sock.fileno())
        self.sock.close()
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self.on_close(self)


def socket_path(dir_fd: int) -> str:
    """The holder's socket, reached through a descriptor of its folder (no path length limit, no
    resolution of the folder's path again)."""
    return f"/proc/self/fd/{dir_fd}/{SOCKET_NAME}"


def peer_uid(sock: socket.socket) -> int:
    import struct

    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def pid_of_pidfd(pidfd: int) -> int | None:
    """The pid a pidfd refers to, as the process itself knows it (getpid() in its own pid
    namespace: the last NSpid of /proc/self/fdinfo, which may belong to an outer namespace's
    procfs), or None once the process has been reaped."""
    found = None
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as f:  # an OSError (no descriptor free) is the caller's
            for line in f:
                if line.startswith(("Pid:", "NSpid:")):
                    found = int(line.split()[-1])
    except ValueError:
        return None
    return found if found is not None and found > 0 else None


def boot_id() -> str:
    """This boot of the host: a holder recorded under another one cannot be alive."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def ask(sock: socket.socket, message: Message, timeout: float) -> tuple[Message, list[int], bytes]:
    """One request and its answer on a blocking socket (the agent's start-up, before its event
    loop runs): the first line back, any descriptors passed with it, and what came after it
    (for the `Channel` that takes the socket over)."""
    sock.settimeout(timeout)
    sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    data, fds = bytearray(), []
    while b"\n" not in data:
        chunk, ancdata, _flags, _addr = sock.recvmsg(READ_SIZE, socket.CMSG_SPACE(MAX_FDS * 4))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
                fds.extend(got)
        if not chunk:
            for fd in fds:
                os.close(fd)
            raise ConnectionError("the holder closed the connection")
        data += chunk
        if len(data) > MAX_LINE:
            raise ConnectionError("the holder's answer is too long")
    line, _, rest = bytes(data).partition(b"\n")
    return json.loads(line), fds, rest

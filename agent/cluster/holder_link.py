"""The agent's side of one job's holder (sandbox/holder.py): its control channel and its pidfd.

A link is made two ways and then works the same. For a job the agent launches, the holder's first
control connection is the socket pair the agent handed over with the spec; after a restart, the
agent connects to `holder.sock` in the job's state folder. Either way the agent says `hello` and
the holder answers with who it is and a pidfd of itself, which the agent checks before it trusts
anything: the pidfd's pid is the pid the holder names, that process is in the job's cgroup, the
holder repeats the token the agent put in the job's spec (only the process that read the spec
knows it), and the process is still alive after all of that (so no check looked at a recycled
pid). From then on the pidfd says when the holder is gone: never a bare pid.

`LaunchNote` is what the agent keeps with the sandbox's record for its own later use: the token,
the uid slot, the outputs a script job asked for, and the bridge link once made (a job's in its
record file, a session's beside it as `launch.json`).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..fdlimit import is_shortage
from ..fs import write_first
from ..sandbox import control

LAUNCH_NAME = "launch.json"
HELLO_TIMEOUT_S = 5.0
NO_PIDFD = "it did not answer hello with its pidfd"
HELLO_RETRY_S = 0.2
HELLO_RETRIES = 300     # a minute without a free descriptor to receive or check the pidfd


@dataclass
class LaunchNote:
    token: str
    uid_slot: int
    outputs: list[str] = field(default_factory=list)
    cell: bool = False                      # a script: its runner may leave a last value and figures
    network: dict[str, str] | None = None   # {"veth", "address"} of a bridge job, once attached
    work_files: int = 0                     # what its /work copy may keep (its user's quota left)
    work_bytes: int = 0
    boot_id: str = ""                       # the host's boot it was launched in (its holder's says so too)

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))  # its fields are plain values: no asdict recursion

    def write(self, folder: Path, fresh: bool = False) -> None:
        """As `launch.json` beside the sandbox's record (a session's; a job's note is in its
        record file, jobs/store.py): written whole and renamed into place; `fresh` (before the
        sandbox is launched, so nothing reads it yet) in place, in one write."""
        data = json.dumps(self.to_json()).encode()
        if fresh:
            write_first(folder / LAUNCH_NAME, data)
            return
        tmp = folder / (LAUNCH_NAME + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, folder / LAUNCH_NAME)

    @classmethod
    def read(cls, folder: Path) -> "LaunchNote | None":
        """The note of `launch.json` in `folder`, if it is there and whole."""
        try:
            return cls.from_json(json.loads((folder / LAUNCH_NAME).read_text()))
        except (OSError, ValueError):
            return None

    @classmethod
    def from_json(cls, data: Any) -> "LaunchNote | None":
        try:
            return cls(token=str(data["token"]), uid_slot=int(data["uid_slot"]), outputs=list(data.get("outputs", [])),
                       cell=bool(data.get("cell")), network=data.get("network"),
                       work_files=int(data.get("work_files", 0)), work_bytes=int(data.get("work_bytes", 0)),
                       boot_id=str(data.get("boot_id", "")))
        except (AttributeError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Hello:
    pid: int
    uid: int
    state: str            # setup, waiting (for go), starting, running, ending
    seq: int
    started_at: float | None
    stop_reason: str | None
    translator: dict[str, Any] = field(default_factory=dict)   # output.Translator.state()


@dataclass
class Checked:
    """A holder whose hello was checked at start-up, not yet on the event loop (HolderLink.resume)."""

    sock: socket.socket
    hello: Hello
    pidfd: int
    received: bytes


class HolderEvents(Protocol):
    def greeted(self, hello: Hello) -> None: ...
    def running(self, at: float) -> None: ...
    def advanced(self, seq: int) -> None: ...
    def notice(self, data: Any) -> None: ...
    def ended(self) -> None: ...
    def gone(self) -> None: ...


def check_hello(msg: dict[str, Any], fds: list[int], job_id: str, token: str,
                member: Callable[[int], bool]) -> tuple[Hello, int] | str:
    """(the hello, the holder's pidfd) if the answer proves the holder; else why not. Every
    descriptor not returned is closed."""
    pidfd, extra = (fds[0], fds[1:]) if fds else (-1, [])
    for fd in extra:
        os.close(fd)
    try:
        problem = _problem(msg, pidfd, job_id, token, member)
    except OSError:  # out of descriptors while checking: the caller asks again
        if pidfd >= 0:
            os.close(pidfd)
        raise
    if problem is not None:
        if pidfd >= 0:
            os.close(pidfd)
        return problem
    translator = msg.get("translator")
    return Hello(pid=int(msg["pid"]), uid=int(msg["uid"]), state=str(msg["state"]), seq=int(msg["seq"]),
                 started_at=msg.get("started_at"), stop_reason=msg.get("stop_reason"),
                 translator=translator if isinstance(translator, dict) else {}), pidfd


def _problem(msg: dict[str, Any], pidfd: int, job_id: str, token: str, member: Callable[[int], bool]) -> str | None:
    if msg.get("ev") != "hello" or pidfd < 0:
        return NO_PIDFD
    if msg.get("protocol") != control.PROTOCOL:
        return f"it speaks holder protocol {msg.get('protocol')!r}; this agent speaks {control.PROTOCOL}"
    if msg.get("job_id") != job_id or msg.get("token") != token:
        return "it does not know the job's token"
    pid = control.pid_of_pidfd(pidfd)
    if pid is None or pid != msg.get("pid"):
        return f"its pidfd names pid {pid}, not the pid {msg.get('pid')!r} it claims"
    if not member(pid):
        return f"pid {pid} is not in the job's cgroup"
    if not alive(pidfd):
        return "it ended while it was being checked"
    return None


def alive(pidfd: int) -> bool:
    """A pidfd turns readable when its process ends."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def connect(folder: Path, timeout: float = HELLO_TIMEOUT_S) -> tuple[socket.socket, dict[str, Any], list[int], bytes]:
    """Connect to a running holder's socket and say hello (blocking: the agent's start-up)."""
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(control.socket_path(dir_fd))
        msg, fds, rest = control.ask(sock, {"op": "hello"}, timeout)
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(dir_fd)
    return sock, msg, fds, rest


class HolderLink:
    """One holder, seen from the agent's event loop."""

    def __init__(self, job_id: str, token: str, member: Callable[[int], bool], events: HolderEvents) -> None:
        self.job_id = job_id
        self.token = token
        self.member = member
        self.events = events
        self.channel: control.Channel | None = None
        self.pidfd: int | None = None
        self.hello: Hello | None = None
        self.problem: str | None = None   # why a holder that answered was not trusted
        self.retries = 0                  # hellos asked again for want of a descriptor
        self.ended = False

    def open(self, sock: socket.socket) -> None:
        """A launched job: its first connection; the hello is answered once the holder runs."""
        loop = asyncio.get_running_loop()
        self.channel = control.Channel(sock, loop, self._on_message, self._on_close)
        self.channel.send({"op": "hello"})

    def resume(self, checked: Checked) -> None:
        """An adopted job, checked already at start-up: from now on on the event loop."""
        loop = asyncio.get_running_loop()
        self.hello, self.pidfd = checked.hello, checked.pidfd
        self.channel = control.Channel(checked.sock, loop, self._on_message, self._on_close, checked.received)
        loop.add_reader(checked.pidfd, self._end)
        self.events.greeted(checked.hello)
        self.channel.drain()

    def _on_message(self, _channel: control.Channel, msg: dict[str, Any], fds: list[int]) -> None:
        ev = msg.get("ev")
        if ev == "hello" and self.hello is None:
            try:
                checked = check_hello(msg, fds, self.job_id, self.token, self.member)
            except OSError as exc:
                if not is_shortage(exc):
                    raise
                checked = NO_PIDFD
            if checked == NO_PIDFD and self.retries < HELLO_RETRIES:
                # no descriptor was free to receive its pidfd (the kernel drops it) or to check it
                self.retries += 1
                asyncio.get_running_loop().call_later(HELLO_RETRY_S, self.send, {"op": "hello"})
                return
            if isinstance(checked, str):
                self.problem = checked
                return self._end()
            self.hello, self.pidfd = checked
            asyncio.get_running_loop().add_reader(self.pidfd, self._end)
            self.events.greeted(self.hello)
            return
        for fd in fds:
            os.close(fd)
        if ev == "seq" and isinstance(msg.get("seq"), int):
            self.events.advanced(msg["seq"])
        elif ev == "running" and isinstance(msg.get("at"), (int, float)):
            self.events.running(float(msg["at"]))
        elif ev == "notice":
            self.events.notice(msg.get("data"))
        elif ev == "ended":
            self.events.ended()

    def _on_close(self, _channel: control.Channel) -> None:
        if self.pidfd is None:
            self._end()  # it never answered: it is gone, or never took the job
        # a greeted holder that closed its side is still watched through its pidfd

    def _end(self) -> None:
        if self.ended:
            return
        self.detach()
        self.events.gone()

    def detach(self) -> None:
        """Stop watching (the agent stops and leaves the job running, or the holder is gone)."""
        self.ended = True
        if self.pidfd is not None:
            asyncio.get_running_loop().remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        if self.channel is not None:
            channel, self.channel = self.channel, None
            channel.on_close = lambda _c: None
            channel.close()

    # ---- requests ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.hello.pid if self.hello and self.pidfd is not None else None

    def is_alive(self) -> bool:
        return self.pidfd is not None and alive(self.pidfd)

    def send(self, message: dict[str, Any]) -> None:
        if self.channel is not None:
            self.channel.send(message)

    def stop(self, reason: str, grace: float) -> None:
        self.send({"op": "stop", "reason": reason, "grace": grace})

    def go(self) -> None:
        self.send({"op": "go"})

    def abort(self, message: str) -> None:
        self.send({"op": "abort", "message": message})

    def signal(self, sig: int) -> None:
        self.send({"op": "signal", "signal": sig})

    def input(self, data: str) -> None:
        self.send({"op": "input", "data": data})

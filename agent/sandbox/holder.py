"""The job's holder: the stage-1 process, once its job has come, holds the job until its end.

As containerd's shim holds a container, the holder owns everything of its job that must outlive
the agent: it does not die with the agent or the launcher (its death signal is cleared once it has
taken the job); it owns the job's stdout, stderr and status pipes (and, for a session, its stdin);
it writes the job's event log itself, holding the log's lock for its whole life (eventfile.py:
one writer, gap-free `seq`); it enforces the job's timeout; it records how the job ended
(outcome.py) before it exits; and it answers the agent on a root-only control socket in the job's
state folder (control.py: stop, go, input, hello with its pidfd). An agent that restarts finds it
there, proves who it is, and follows the log from disk again.

What runs in the job's stage, init and in the job, and in which order, is `sequence.py`.
"""

from __future__ import annotations

import fcntl
import gc
import json
import math
import os
import signal
import socket
import time
from typing import Any, NoReturn

from ..eventfile import LOG_NAME, EventFile
from ..fs import write_first
from . import aheadsocket, control, holderplan, holderproc, sequence, status, workcopy
from .libc import PR_SET_PDEATHSIG, prctl, set_process_name
from .miniloop import SelectorLoop, Timer
from .outcome import Outcome
from .output import Event, Step, TextOutput, translator_for
from .spec import SandboxSpec

GO_DEADLINE_S = 300.0          # a bridge job whose network no agent finishes is aborted after this
MAX_CONNECTIONS = 16
MAX_PENDING_INPUT = 64 << 20
SIGNALS = range(1, 65)          # the kernel's signal numbers: a `signal` request outside them is ignored
HOLDER_NAME = "jnb-holder"
READ_SIZE = 512 << 10          # one read (and one event) takes what the pipe holds, up to this
BUSY_PAUSE_S = 0.002           # a stream that writes in small pieces is read once per this
SMALL_READ = READ_SIZE >> 2
BUSY_STREAK = 8                # ... once this many small reads came in a row (a cell's few frames never wait)


def hold(stage: sequence.Stage, spec: SandboxSpec, control_fd: int) -> NoReturn:
    """The stage's life from its job's arrival on; never returns into the launcher."""
    came = time.monotonic()
    set_process_name(HOLDER_NAME)
    gc.enable()  # a holder lives as long as its job; the launcher's objects stay frozen, unscanned
    try:
        holder = Holder(stage, spec, control_fd)
        holder.outcome.marks["came"] = came
        problem = holder.take()
        holder.outcome.mark("taken")
    except BaseException:  # noqa: BLE001 - nothing recorded: the agent reports a failed set-up
        os._exit(sequence.SETUP_FAILED_EXIT)
    try:
        holder.run(problem)
    except BaseException as exc:  # noqa: BLE001 - still record an outcome, then go
        holder.crashed(exc)
    os._exit(0)


class Holder:
    def __init__(self, stage: sequence.Stage, spec: SandboxSpec, control_fd: int) -> None:
        self.stage = stage
        self.spec = spec
        self.control_fd = fcntl.fcntl(control_fd, fcntl.F_DUPFD_CLOEXEC, 16)
        os.close(control_fd)
        holderproc.quiet_stdio()  # first: nothing the holder opens from here on lands on 0-4
        self.loop = SelectorLoop()
        self.outcome = Outcome()
        self.translator = translator_for(spec)
        self.dir_fd = -1
        self.log: EventFile | None = None
        self.pending: list[Event] = []
        self.told_seq = 0
        self.listening: socket.socket | None = None
        self.channels: set[control.Channel] = set()
        self.greeted: set[control.Channel] = set()
        self.own_pidfd = -1
        self.state = "setup"
        self.init_pid: int | None = None
        self.forked = False
        self.init_pidfd: int | None = None
        self.open_streams = 0
        self.go_fd: int | None = None
        self.stdin_fd: int | None = None
        self.pending_in = bytearray()
        self.kill_timer: Timer | None = None
        self.streams: dict[str, int] = {}  # stdout, stderr, status: the holder's ends
        self.go_deadline: float | None = None
        self.last_read: dict[int, tuple[float, int]] = {}  # per stream: when, and the busy streak

    # ---- taking the job ----------------------------------------------------------------------

    def take(self) -> str | None:
        """Lock the job's log (a log that already ended belongs to a job an agent gave up on: go)
        and stop depending on the launcher. Returns a set-up problem to record, or None. The
        cgroup keeps its stage's name until the init is spawned (`_name_cgroup`)."""
        self.dir_fd = os.open(self.spec.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.log = EventFile.open(LOG_NAME, self.dir_fd, wait=True)
        if self.log.ended:
            os._exit(0)
        self.told_seq = self.log.seq
        self.own_pidfd = os.pidfd_open(os.getpid())
        prctl(PR_SET_PDEATHSIG, 0)  # from here on, the job outlives the launcher and the agent
        holderproc.protect_from_oom_kill()
        return self.stage.problem

    def _name_cgroup(self, problem: str | None) -> str | None:
        """The cgroup takes the job's name (sequence.TAKE) once the init is spawned: the renames
        (seven on cgroup v1) run while the init sets up, not before it. The agent hears from this
        holder (hello, its socket) only after them; if it dies before, the launcher removes the
        cgroup (stagewatch.py). A failed rename kills the init: the agent could not find the job."""
        if self.stage.cgroup is None:
            return problem
        try:
            sequence.run_steps(sequence.TAKE, self.stage, self.spec)
        except sequence.SetupError as exc:
            if self.init_pid is not None:
                self._signal(signal.SIGKILL)
                self._init_ended()
            return problem or f"sandbox stage 1: {exc}"
        return problem

    def _announce(self) -> None:
        """Say who holds the job (holder.json) and listen on its socket, once the init is spawned
        (while it sets up): the agent that launched the job talks on the socket pair it handed
        over, and one that restarts meanwhile waits for the socket (restore.py). The socket is the
        one the stage bound ahead, moved here (aheadsocket.py), or a new one."""
        self._write_holder_file()
        ahead, self.stage.ahead = self.stage.ahead, None
        self.listening = aheadsocket.placed(ahead, self.dir_fd, control.SOCKET_NAME)
        self.listening.listen(MAX_CONNECTIONS)
        self.listening.setblocking(False)
        self.loop.add_reader(self.listening.fileno(), self._accept)

    def _write_holder_file(self) -> None:
        data = {"protocol": control.PROTOCOL, "pid": os.getpid(), "job_id": self.spec.job_id,
                "boot_id": control.boot_id(), "taken_at": time.time()}
        write_first(control.HOLDER_TEMPORARY, json.dumps(data).encode(), self.dir_fd)  # a spare's file, if there
        os.rename(control.HOLDER_TEMPORARY, control.HOLDER_NAME, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)

    def _hand_over(self) -> None:
        """A text job's steady state is jnb-holder's (holderplan.py): this process execs it, and
        returns (keeping the job) for any other translator, or if jnb-holder is missing or fails.
        A notebook cell (its runner, inputs and outputs in a kept /work) goes too: jnb-holder
        copies /work out in its own process (holder_copy.c), as this one would."""
        if type(self.translator) is not TextOutput or self.init_pid is None or self.init_pidfd is None:
            return
        assert self.log is not None and self.listening is not None
        fds = {"log": self.log.fd, "dir": self.dir_fd, "first": self.control_fd, "listen": self.listening.fileno(),
               **self.streams, "init": self.init_pidfd, "go": self.go_fd, "stdin": self.stdin_fd}
        holderplan.hand_over(self.spec, self.stage.cgroup, {k: fd for k, fd in fds.items() if fd is not None},
                             holderplan.State(self.log.seq, self.state, self.outcome.marks, self.init_pid,
                                              self.go_deadline))

    # ---- the job's life ----------------------------------------------------------------------

    def run(self, problem: str | None) -> None:
        first = socket.socket(fileno=self.control_fd)
        self._add_channel(first)
        if problem is None:
            problem = sequence.prepare_root(self.stage, self.spec, self.outcome.mark)
        if problem is None:
            problem = self._start_init()
        problem = self._name_cgroup(problem)
        self._announce()
        if problem is not None:
            self.outcome.take(status.setup_error(problem))
        else:
            self._hand_over()  # a text job's steady state is jnb-holder's: no return then
            while self.init_pid is not None or self.open_streams:
                self.loop.run_once()
                self._flush()
            self.outcome.mark("drained")
        self._finish()

    def _start_init(self) -> str | None:
        """Spawn the init with its ends of the pipes at 0-4 (0: /dev/null without a stdin pipe;
        4: the go pipe, if any); the holder keeps the other ends, and a pidfd of the init from
        the spawn on. A problem to record, or None."""
        spec = self.spec
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        st_r, st_w = os.pipe2(os.O_CLOEXEC)
        go_r, self.go_fd = os.pipe2(os.O_CLOEXEC) if spec.wait_for_go else (None, None)
        in_r, self.stdin_fd = os.pipe2(os.O_CLOEXEC) if spec.stdin_pipe else (None, None)
        if in_r is None:
            in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        theirs = {slot: fd for slot, fd in enumerate((in_r, out_w, err_w, st_w, go_r)) if fd is not None}
        try:
            pid = sequence.start_init(spec, theirs)
        except sequence.SetupError as exc:
            return str(exc)  # the holder exits after recording it: its descriptors go with it
        finally:
            for fd in theirs.values():
                os.close(fd)
        self.init_pid, self.init_pidfd, self.forked = pid, os.pidfd_open(pid), True
        self.outcome.mark("forked")
        self.state = "waiting" if self.go_fd is not None else "starting"
        for fd, kind in ((out_r, "stdout"), (err_r, "stderr")):
            holderproc.widen(fd)
            os.set_blocking(fd, False)
            self.loop.add_reader(fd, self._read_output, fd, kind)
        os.set_blocking(st_r, False)
        self.loop.add_reader(st_r, self._read_status, st_r, bytearray())
        self.open_streams = 3
        self.loop.add_reader(self.init_pidfd, self._init_ended)
        if self.stdin_fd is not None:
            os.set_blocking(self.stdin_fd, False)
        self.streams = {"stdout": out_r, "stderr": err_r, "status": st_r}
        if self.go_fd is not None:
            self.go_deadline = time.monotonic() + GO_DEADLINE_S
            self.loop.call_later(GO_DEADLINE_S, lambda: self.abort("no agent finished the job's network set-up"))
        if self.outcome.stop_reason is not None:
            self._signal(signal.SIGKILL)
        return None

    def _read_output(self, fd: int, kind: str) -> None:
        """One read, one event. A program that writes in small pieces (`seq`: 4 KiB) would wake
        the holder, and so the log, the agent and the client, once per piece: once a stream has
        been read `BUSY_STREAK` times without a quiet moment, a small read leaves it alone for
        `BUSY_PAUSE_S`, so the next read takes what came meanwhile. A few writes in a row (a
        cell's frames) are never delayed, and a fast writer fills large reads, which pause
        nothing."""
        data = _read(fd, READ_SIZE)
        if data is None:
            return
        self._take(self.translator.output(kind, data))
        if not data:
            self._close_stream(fd)
            return
        now = time.monotonic()
        before, streak = self.last_read.get(fd, (0.0, 0))
        streak = streak + 1 if now - before < BUSY_PAUSE_S * 2 else 0
        self.last_read[fd] = (now, streak)
        if streak >= BUSY_STREAK and len(data) < SMALL_READ:
            self.loop.remove_reader(fd)
            self.loop.call_later(BUSY_PAUSE_S, lambda: self.loop.add_reader(fd, self._read_output, fd, kind))

    def _take(self, step: Step) -> None:
        """A translator's answer: events for the log, bytes for stdin, notices for the agents."""
        self.pending += step.events
        if step.stdin:
            self._write_input(step.stdin)
        if step.notices:
            # The log first, so an agent told of a cell's end finds its events there; then the
            # notices, then how far the log goes: an agent (whose followers wake on `seq`) has
            # taken in a cell's end before any client of it can see its `cell_end`.
            self._write_pending()
            for notice in step.notices:
                self._tell({"ev": "notice", "data": notice})
            self._tell_seq()

    def _read_status(self, fd: int, buffer: bytearray) -> None:
        data = _read(fd, 4096)
        if data is None:
            return
        for msg in status.take_lines(buffer, data):
            self._on_status(msg)
        if not data:
            self._close_stream(fd)

    def _on_status(self, msg: status.Message) -> None:
        if msg.kind is status.Kind.RUNNING:
            self.state, self.outcome.started_at = "running", time.time()
            self.outcome.mark("running")
            self.pending += self.translator.running()
            self._flush()
            self._tell({"ev": "running", "at": self.outcome.started_at})
            if self.spec.timeout_s:
                self.loop.call_later(self.spec.timeout_s, lambda: self.stop("timeout", self.spec.stop_grace_s))
        elif msg.kind in status.TERMINAL:
            self.outcome.take(msg)  # an exec error's message goes into the log with the verdict

    def _close_stream(self, fd: int) -> None:
        self.loop.remove_reader(fd)
        os.close(fd)
        self.open_streams -= 1

    def _init_ended(self) -> None:
        assert self.init_pid is not None and self.init_pidfd is not None
        self.loop.remove_reader(self.init_pidfd)
        os.waitpid(self.init_pid, 0)
        self.outcome.mark("init_ended")
        os.close(self.init_pidfd)
        self.init_pid = self.init_pidfd = None
        self.state = "ending"
        self._close_input()
        if self.go_fd is not None:
            os.close(self.go_fd)
            self.go_fd = None

    # ---- what the agent asks -----------------------------------------------------------------

    def stop(self, reason: str, grace: float) -> None:
        """SIGTERM to the job (the init forwards it), SIGKILL after `grace`; the first reason wins."""
        if self.outcome.stop_reason is None:
            self.outcome.stop_reason = reason
        if self.init_pidfd is None:
            return  # not forked yet (it is killed at once then), or already gone
        if self.go_fd is not None:
            self.abort(None)  # it never started: the init reports the aborted set-up
        self._signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if grace > 0 and self.kill_timer is None:
            self.kill_timer = self.loop.call_later(grace, lambda: self._signal(signal.SIGKILL))

    def go(self) -> None:
        if self.go_fd is not None:
            os.write(self.go_fd, b"g")
            os.close(self.go_fd)
            self.go_fd = None
            self.state = "starting"

    def abort(self, message: str | None) -> None:
        """The agent's outside set-up failed: the init sees EOF instead of `go` (once it has had
        `go`, nothing to abort)."""
        if self.go_fd is None:
            return
        if message and self.outcome.agent_error is None:
            self.outcome.agent_error = message
        os.close(self.go_fd)
        self.go_fd = None

    def _signal(self, sig: int) -> None:
        if self.init_pidfd is not None:
            try:
                signal.pidfd_send_signal(self.init_pidfd, sig)
            except ProcessLookupError:
                pass

    def _write_input(self, data: bytes) -> None:
        if self.stdin_fd is None:
            return
        self.pending_in += data
        if len(self.pending_in) > MAX_PENDING_INPUT:
            self.pending_in.clear()
            self.stop("stopped", 0)  # a sandbox that does not read its input
            return
        self._flush_input()

    def _flush_input(self) -> None:
        if self.stdin_fd is None:
            return
        try:
            while self.pending_in:
                del self.pending_in[:os.write(self.stdin_fd, self.pending_in)]
        except BlockingIOError:
            pass
        except OSError:
            return self._close_input()
        self.loop.remove_writer(self.stdin_fd)
        if self.pending_in:
            self.loop.add_writer(self.stdin_fd, self._flush_input)

    def _close_input(self) -> None:
        if self.stdin_fd is not None:
            self.loop.remove_writer(self.stdin_fd)
            os.close(self.stdin_fd)
            self.stdin_fd = None
            self.pending_in.clear()

    # ---- the control channels ----------------------------------------------------------------

    def _accept(self) -> None:
        assert self.listening is not None
        try:
            sock, _ = self.listening.accept()
        except OSError:
            return
        if len(self.channels) >= MAX_CONNECTIONS or control.peer_uid(sock) != 0:
            sock.close()
            return
        self._add_channel(sock)

    def _add_channel(self, sock: socket.socket) -> None:
        self.channels.add(control.Channel(sock, self.loop, self._on_message, self._on_close))

    def _on_close(self, channel: control.Channel) -> None:
        self.channels.discard(channel)
        self.greeted.discard(channel)

    def _on_message(self, channel: control.Channel, msg: dict[str, Any], fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)  # the holder takes no descriptors from anyone
        op = msg.get("op")
        try:
            if op == "hello":
                channel.send(self._hello(), [self.own_pidfd])
                self.greeted.add(channel)
            elif op == "stop":
                grace = float(msg.get("grace", self.spec.stop_grace_s))
                if not math.isfinite(grace):  # a timer must be able to hold it
                    raise ValueError("grace is not a number")
                self.stop(str(msg.get("reason") or "stopped"), grace)
            elif op == "go":
                self.go()
            elif op == "abort":
                self.abort(str(msg.get("message") or "the agent aborted the job"))
            elif op == "signal":
                sig = int(msg["signal"])
                if sig in SIGNALS:  # what pidfd_send_signal takes (as jnb-holder); anything else is ignored
                    self._signal(sig)
            elif op == "input" and self.stdin_fd is not None:
                self._take(self.translator.input(str(msg.get("data", ""))))
        except (KeyError, TypeError, ValueError, OverflowError):
            pass  # a malformed request from root's own agent: ignored

    def _hello(self) -> dict[str, Any]:
        return {"ev": "hello", "protocol": control.PROTOCOL, "job_id": self.spec.job_id,
                "token": self.spec.holder_token, "pid": os.getpid(), "uid": self.spec.uid,
                "state": self.state, "seq": self.log.seq if self.log else 0,
                "started_at": self.outcome.started_at, "stop_reason": self.outcome.stop_reason,
                "boot_id": control.boot_id(), "translator": self.translator.state()}

    def _tell(self, message: dict[str, Any]) -> None:
        for channel in list(self.greeted):
            channel.send(message)

    def _flush(self) -> None:
        """Pending events into the log in one write, then tell the agents how far it goes."""
        self._write_pending()
        self._tell_seq()

    def _write_pending(self) -> None:
        assert self.log is not None
        if self.pending:
            events, self.pending = self.pending, []
            self.log.append(events)

    def _tell_seq(self) -> None:
        assert self.log is not None
        if self.log.seq != self.told_seq:
            self.told_seq = self.log.seq
            self._tell({"ev": "seq", "seq": self.log.seq})

    # ---- the end -----------------------------------------------------------------------------

    def _finish(self) -> None:
        """After the job: usage and OOM from the cgroup, /work copied out, the last events, the
        outcome on disk; the socket goes, the log's lock is let go, and the agents hear `ended`:
        they report the job's end while this process exits (the teardown of its mount namespace,
        a copy of the host's, and of the job's other namespaces is nobody's wait)."""
        self.state = "ending"
        cgroup = self.stage.cgroup
        if cgroup is not None:
            try:
                u = cgroup.usage()
                self.outcome.cpu_s, self.outcome.memory_peak_bytes = round(u.cpu_s, 3), u.memory_peak_bytes
                self.outcome.oom = cgroup.oom_killed()
            except Exception:  # noqa: BLE001 - usage is best effort
                pass
        self.outcome.mark("usage")
        if self.forked and self.outcome.end != status.Kind.SETUP_ERROR.value:
            files, size, notes = sequence.collect_work(self.spec)
            self.outcome.kept_files, self.outcome.kept_bytes = files, size
            for note in notes:
                self.pending.append(workcopy.note_event(note))
        self.outcome.mark("work_copied")
        self.pending += self.translator.ended(self.outcome)
        self._flush()
        self.outcome.mark("logged")
        self.outcome.ended_at = time.time()
        self.outcome.write(self.dir_fd, durable=False)
        for name in (control.SOCKET_NAME, control.HOLDER_NAME):
            try:
                os.unlink(name, dir_fd=self.dir_fd)
            except OSError:
                pass
        assert self.log is not None
        self.log.close()  # the agent writes the log's `exit` now, not after this process has gone
        self._tell({"ev": "ended"})
        try:
            Outcome.sync(self.dir_fd)  # durable, while nobody waits
        except OSError:
            pass

    def crashed(self, exc: BaseException) -> None:
        """A bug in the holder: the job goes (the init dies with its parent), the reason is kept."""
        self.outcome.take(status.setup_error(f"the job's holder failed: {type(exc).__name__}: {exc}"))
        try:
            if self.init_pidfd is not None:
                self._signal(signal.SIGKILL)
            self.outcome.write(self.dir_fd)
        except Exception:  # noqa: BLE001
            pass


def _read(fd: int, size: int) -> bytes | None:
    """What a pipe has (b"": its end, or a pipe that broke), None if nothing yet."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None
    except OSError:
        return b""

"""One job's srun, and the frames its node side sends back (see slurm_executor.py)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import resource
import subprocess
from pathlib import Path
from typing import Any, Protocol

from . import slurm, wire
from .executor import Ending, JobEvents, Placement
from ..fs import UnsafePath, create_beneath, remove_tree, write_all
from ..sandbox import cgroups, status

MAX_PENDING_INPUT = 64 << 20   # a session's input the node has not taken yet


class Dispatcher(Protocol):
    """The SlurmExecutor, as one job's srun sees it (it starts the jobs; each tells it its end)."""

    env: dict[str, str]           # Slurm's environment for srun, squeue, scancel
    max_output_bytes: int

    def forget(self, name: str) -> None:
        """The job of Slurm name `name` is over: no more polling or watching its files."""


class SlurmExecution:
    def __init__(self, executor: Dispatcher, name: str, folder: Path, events: JobEvents,
                 artifacts: str | None, disk_bytes: int, interactive: bool) -> None:
        self.executor = executor
        self.name = name
        self.folder = folder
        self.events = events
        self.interactive = interactive
        self.placement: Placement | None = None
        self.slurm_id: str | None = None
        self.reader = wire.FrameReader()
        self.offset = 0
        self.end: dict[str, Any] | None = None
        self.refused: str | None = None
        self.broken: str | None = None          # a frame the agent does not accept
        self.agent_stop = False
        self.hopeless: str | None = None
        self.finished = False
        self.reason = ""
        self.files = FileReceiver(artifacts, disk_bytes)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pidfd: int | None = None
        self.stdin: int | None = None           # a session's: the envelope, then input frames
        self.pending_in = bytearray()

    def launch(self, envelope: bytes, argv: list[str]) -> None:
        self.folder.parent.mkdir(mode=0o700, exist_ok=True)
        self.folder.mkdir(mode=0o700)
        limit = 4 * (self.executor.max_output_bytes + self.files.limit) + (16 << 20)
        fds = {}
        try:
            for name in ("frames", "srun.log") + (() if self.interactive else ("spec",)):
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fds[name] = os.open(self.folder / name, flags | (os.O_APPEND if name == "frames" else 0), 0o600)
            if self.interactive:
                fds["spec"], self.stdin = os.pipe2(os.O_CLOEXEC)
            else:
                write_all(fds["spec"], envelope)
                os.close(fds["spec"])
                fds["spec"] = os.open(self.folder / "spec", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            self.proc = subprocess.Popen(argv, stdin=fds["spec"], stdout=fds["frames"], stderr=fds["srun.log"],
                                         env=self.executor.env, start_new_session=True, close_fds=True)
        finally:
            for fd in fds.values():
                os.close(fd)
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
        self.pidfd = os.pidfd_open(self.proc.pid)
        asyncio.get_running_loop().add_reader(self.pidfd, self._srun_ended)
        if self.stdin is not None:
            os.set_blocking(self.stdin, False)
            self._send(envelope)

    def fail_to_launch(self, message: str) -> None:
        self.finished = True
        self.executor.forget(self.name)
        self.events.ended(Ending(setup=message))

    # ---- frames ------------------------------------------------------------------------------

    def read(self) -> None:
        """Whatever srun appended since the last read, as frames."""
        if self.finished or self.broken:
            return
        try:
            fd = os.open(self.folder / "frames", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        try:
            while chunk := os.pread(fd, 1 << 20, self.offset):
                self.offset += len(chunk)
                for frame in self.reader.feed(chunk):
                    self._frame(frame)
        except wire.FrameError as exc:
            self.broken = f"the job's node sent what the agent does not accept: {exc}"
            self.stop(0)
        finally:
            os.close(fd)

    def _frame(self, frame: dict[str, Any]) -> None:
        kind = frame["k"]
        if kind == "out":
            self.events.output(frame["s"], frame["d"].encode())
        elif kind == "status":
            try:
                self.events.status(status.from_dict(frame["event"]))
            except (ValueError, KeyError, TypeError):
                raise wire.FrameError("a status frame of no known kind") from None
        elif kind == "hello":
            self.slurm_id = frame["slurm_job_id"][:32]
            self.placement = Placement(frame["node"][:256], "slurm", self.slurm_id,
                                       [str(d)[:64] for d in frame["devices"][:64]])
            self.events.placed(self.placement)
        elif kind == "file":
            self.files.take(frame)
        elif kind == "end":
            self.end = frame
        elif kind == "refused":
            self.refused = "the node side refused the job: " + frame["message"][:1000]

    def seen_in_queue(self, entry: slurm.QueueEntry) -> None:
        self.slurm_id = self.slurm_id or entry.job_id
        if entry.state == "PENDING" and entry.reason != self.reason:
            self.reason = entry.reason
            if slurm.hopeless(entry.reason):
                self.hopeless = f"Slurm will never start this job as asked: {entry.reason}"
                self.stop(0)
            else:
                self.events.queued(slurm.pending_message(entry.reason))

    # ---- what the agent does to it ---------------------------------------------------------

    holds_log = False  # the agent writes the log from the node side's frames

    def stop(self, grace: float | None = None, reason: str = "stopped") -> None:
        """scancel: Slurm sends the step SIGTERM and the node side gives the job the grace its
        spec names before SIGKILL. A job still in the queue just leaves it."""
        if self.finished:
            return
        self.agent_stop = self.agent_stop or not (self.broken or self.hopeless)
        try:
            slurm.cancel(self.executor.env, self.slurm_id, None if self.slurm_id else self.name)
        except slurm.SlurmError:
            pass  # gone already; srun's end finishes the job

    def kill(self) -> None:
        self.stop(0)

    async def detach(self) -> None:
        pass  # a Slurm job does not outlive its agent: the agent stops it first

    def signal(self, sig: int) -> None:
        self._send(wire.frame("signal", sig=int(sig)))

    def write_input(self, data: bytes) -> None:
        if self.stdin is None:
            raise BrokenPipeError("the sandbox's input is closed")
        if len(self.pending_in) + len(data) > MAX_PENDING_INPUT:
            self.stop(0)
            raise BrokenPipeError("the sandbox does not read its input")
        self._send(wire.frame("in", b=base64.b64encode(data).decode()))

    def usage(self) -> cgroups.CgroupUsage | None:
        return None  # the node side reports usage at the end

    def _send(self, data: bytes) -> None:
        """To srun's stdin (a session's), never blocking: what the pipe does not take waits."""
        if self.stdin is None:
            return
        self.pending_in += data
        loop = asyncio.get_running_loop()
        try:
            while self.pending_in:
                del self.pending_in[:os.write(self.stdin, self.pending_in)]
        except BlockingIOError:
            pass
        except OSError:
            self.pending_in.clear()
        loop.remove_writer(self.stdin)
        if self.pending_in:
            loop.add_writer(self.stdin, self._send, b"")

    # ---- the end ----------------------------------------------------------------------------

    def _srun_ended(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.pidfd is not None and self.proc is not None
        loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        self.pidfd = None
        if self.stdin is not None:
            loop.remove_writer(self.stdin)
            os.close(self.stdin)
            self.stdin = None
        code = self.proc.wait()
        self.read()
        loop.create_task(self._conclude(code))

    async def _conclude(self, code: int) -> None:
        ending = Ending()
        if self.end is not None:
            usage = self.end.get("usage") or {}
            ending.cpu_s, ending.memory_peak_bytes = _number(usage.get("cpu_s")), _number(usage.get("memory_peak_bytes"))
            ending.oom = bool(self.end.get("oom"))
            ending.stop = "timeout" if self.end.get("stop") == "timeout" else None
        if self.files.problem:
            self.events.status(status.artifacts_error(self.files.problem))
        if self.broken:
            ending.lost = self.broken
        elif self.hopeless or self.refused:
            ending.setup = self.hopeless or self.refused
        elif not self.agent_stop and (self.end is None or self.end.get("stop") == "stopped"):
            await self._explain_loss(ending, code)
        self.files.close()
        self.finished = True
        self.executor.forget(self.name)
        remove_tree(str(self.folder))   # srun's files: what mattered is in the verdict now
        self.events.ended(ending)

    async def _explain_loss(self, ending: Ending, code: int) -> None:
        """The node side did not report an end of its own: ask Slurm what became of the job."""
        log = _tail(self.folder / "srun.log")
        state, reason = "", ""
        if self.slurm_id:
            try:
                state, reason = await asyncio.to_thread(slurm.job_state, self.executor.env, self.slurm_id)
            except slurm.SlurmError:
                pass
        node = self.placement.node if self.placement else "its node"
        if state == "TIMEOUT":
            ending.stop = "timeout"
        elif self.placement is None and "Unable to allocate resources" in log:
            ending.setup = "Slurm refused the job: " + log.split("Unable to allocate resources:")[-1].strip()
        elif self.placement is None and state != "NODE_FAIL":
            # the node side never started: nothing of the user's ran, and srun says why
            ending.setup = f"Slurm could not start the job (srun exit {code}): {log or 'no message'}"
        elif state == "NODE_FAIL" or "Node failure" in log:
            ending.lost = f"node {node} failed while the job ran (Slurm job {self.slurm_id}: NODE_FAIL)"
        elif state in ("CANCELLED", "PREEMPTED", "DEADLINE"):
            ending.lost = f"Slurm ended the job outside the agent (Slurm job {self.slurm_id}: {state}, {reason})"
        else:
            ending.lost = f"srun ended (exit {code}) without the job's result from {node}: {log or 'no message'}"


class FileReceiver:
    """The files a job left in /work, from `file` frames, written beneath the job's artifacts
    folder without following anything; at most `limit` bytes in all, one file open at a time."""

    def __init__(self, root: str | None, limit: int) -> None:
        self.root = root
        self.limit = limit
        self.written = 0
        self.current: tuple[str, int] | None = None
        self.problem: str | None = None

    def take(self, frame: dict[str, Any]) -> None:
        if self.problem or self.root is None:
            return
        try:
            data = base64.b64decode(frame["d"], validate=True)
            self.written += len(data)
            if self.written > self.limit:
                raise ValueError(f"the node sent more than the job's {self.limit} bytes of /work")
            if self.current is None or self.current[0] != frame["p"]:
                self.close()
                os.makedirs(self.root, mode=0o700, exist_ok=True)
                self.current = (frame["p"], create_beneath(self.root, frame["p"], frame["m"] & 0o755))
            write_all(self.current[1], data)
            if frame["end"]:
                self.close()
        except (ValueError, binascii.Error, UnsafePath, OSError) as exc:
            self.close()
            self.problem = f"a /work file from the node was refused: {exc}"

    def close(self) -> None:
        if self.current is not None:
            os.close(self.current[1])
            self.current = None


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _tail(path: Path, size: int = 2000) -> str:
    """The last lines of srun's messages (srun prints them itself, about its own work)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - size))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip() and "Insane message length" not in ln]
    return " | ".join(lines[-4:])[:600]

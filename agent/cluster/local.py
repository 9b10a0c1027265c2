"""`executor: local` (the default): a job's sandbox on this host, from the agent's warm launcher.

This is the sandbox's life as the agent has always run it, behind the executor interface: the
launcher forks a stage that takes the spec; the agent reads the job's stdout and stderr pipes and
its status socket, sets up a bridge job's network from outside before the init goes on, writes a
session's input, signals the init to stop it, and at the end reads the cgroup's usage and OOM count
and removes the cgroup, the network and the root folder.

The init is held by a pidfd that stage 1 opened before the init could be reaped and sent with its
"started" message: signals go through pidfd_send_signal, the bridge set-up enters the namespace
with setns on it. Never a bare PID (issue 13.1): after stage 1 reaps the init it copies /work out
for a while, and the init's PID may name another process by then; a pidfd of an ended process
reaches nobody.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any, Protocol

from ..fdlimit import QUIET, until_descriptors
from ..sandbox import cgroups, status
from ..sandbox.spec import SandboxSpec
from .executor import Ending, JobEvents
from .launcher_client import JobPipes, Launcher

MAX_PENDING_INPUT = 64 << 20  # input a sandbox has not read yet


class JobNetwork(Protocol):
    """Outside set-up of a job's network namespace (bridge mode); see network/bridge.py."""

    def attach(self, job_id: str, init_pidfd: int) -> dict[str, Any]: ...

    def release(self, job_id: str) -> None: ...


class LocalExecutor:
    def __init__(self, launcher: Launcher, driver: cgroups.CgroupDriver, network: JobNetwork | None,
                 stop_grace_s: float) -> None:
        self.launcher = launcher
        self.driver = driver
        self.network = network
        self.stop_grace_s = stop_grace_s

    def start(self, spec: SandboxSpec, events: JobEvents) -> "LocalExecution":
        job = LocalExecution(self, spec, events)
        job.launch()
        return job


class LocalExecution:
    """One sandbox on this host, from launch to `events.ended`."""

    def __init__(self, executor: LocalExecutor, spec: SandboxSpec, events: JobEvents) -> None:
        self.executor = executor
        self.spec = spec
        self.job_id = spec.job_id
        self.events = events
        self.cgroup = executor.driver.open(f"job-{spec.job_id}")
        self.init_pidfd: int | None = None
        self.stop_grace: float | None = None    # a stop asked for before the init existed
        self.open_streams = 3
        self.go_fd: int | None = None
        self.attaching: asyncio.Task[None] | None = None   # a bridge job's network set-up, off the loop
        self.network_error: str | None = None
        self.stdin: int | None = None
        self.pending_in = bytearray()
        self.timers: list[asyncio.TimerHandle] = []
        self.ended = False

    def launch(self) -> None:
        Path(self.spec.root_dir).mkdir(mode=0o700)
        try:
            pipes = self.executor.launcher.launch(self.spec, wait_for_go=self.spec.network != "none")
        except Exception as exc:  # noqa: BLE001 - reported as a setup failure, never a 500
            self.events.status(status.setup_error(f"launching the sandbox: {exc}"))
            asyncio.get_running_loop().create_task(self._finish_surely())
            return
        self.go_fd, self.stdin = pipes.go, pipes.stdin
        if self.stdin is not None:
            os.set_blocking(self.stdin, False)
        self._watch(pipes)

    # ---- what the sandbox says ------------------------------------------------------------

    def _watch(self, pipes: JobPipes) -> None:
        loop = asyncio.get_running_loop()
        for fd, kind in ((pipes.stdout, "stdout"), (pipes.stderr, "stderr")):
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._on_output, fd, kind)
        pipes.status.setblocking(False)
        loop.add_reader(pipes.status.fileno(), self._on_status, pipes.status)

    def _on_output(self, fd: int, kind: str) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:  # the pipe is unusable: that is its end
            QUIET.say("pipe-read", f"job {self.job_id}: reading its {kind}: {exc.strerror}")
            data = b""
        self.events.output(kind, data)
        if not data:
            self._close_stream(fd)

    def _on_status(self, channel: socket.socket) -> None:
        """One record of the status socket: one message, and with `started`, the init's pidfd."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(channel, status.MAX_MESSAGE + 512, 1)
        except BlockingIOError:
            return
        except OSError as exc:
            QUIET.say("pipe-read", f"job {self.job_id}: reading its status: {exc.strerror}")
            data, fds = b"", []
        for msg in status.take_lines(bytearray(), data):
            try:
                if msg.kind is status.Kind.STARTED and fds and self.init_pidfd is None:
                    self._started(fds.pop())
                else:
                    self.events.status(msg)
            except Exception as exc:  # noqa: BLE001 - one bad message must not stall the job's end
                QUIET.say("status-event", f"job {self.job_id}: handling a status message: {exc!r}")
        for fd in fds:  # a descriptor no message took
            os.close(fd)
        if not data:
            asyncio.get_running_loop().remove_reader(channel.fileno())
            channel.close()
            self._stream_ended()

    def _started(self, pidfd: int) -> None:
        self.init_pidfd = pidfd
        if self.stop_grace is not None:
            self.stop(0)
        if self.go_fd is not None:
            self.attaching = asyncio.get_running_loop().create_task(self._release_go())

    async def _release_go(self) -> None:
        """Set up the job's network from outside (in a thread: netlink work never blocks the event
        loop), then let the init go on; EOF on the pipe aborts it."""
        if self.go_fd is None:
            return
        go, self.go_fd = self.go_fd, None
        network = self.executor.network
        try:
            if self.stop_grace is None and network is not None and self.init_pidfd is not None:
                await asyncio.to_thread(network.attach, self.job_id, self.init_pidfd)
                os.write(go, b"g")
        except Exception as exc:  # noqa: BLE001 - the init sees EOF and reports reason setup
            self.network_error = self.network_error or f"network: {exc}"
        finally:
            os.close(go)

    def _close_stream(self, fd: int) -> None:
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        self._stream_ended()

    def _stream_ended(self) -> None:
        self.open_streams -= 1
        if self.open_streams == 0:
            asyncio.get_running_loop().create_task(self._finish_surely())

    # ---- what the agent does to it ---------------------------------------------------------

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM to the init (which forwards it to the job), SIGKILL after `grace`."""
        if self.ended:
            return
        grace = self.executor.stop_grace_s if grace is None else grace
        if self.init_pidfd is None:
            self.stop_grace = grace if self.stop_grace is None else min(grace, self.stop_grace)
            return  # the "started" message delivers it
        self.stop_grace = grace
        self.signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if grace > 0:
            self.timers.append(asyncio.get_running_loop().call_later(grace, self.signal, signal.SIGKILL))

    def signal(self, sig: int) -> None:
        """A signal to the sandbox's init, which forwards it to the program's process group."""
        if self.init_pidfd is not None and not self.ended:
            try:
                signal.pidfd_send_signal(self.init_pidfd, sig)
            except ProcessLookupError:
                pass  # it has ended: nobody else gets the signal

    def kill(self) -> None:
        self.cgroup.kill()

    def usage(self) -> cgroups.CgroupUsage | None:
        try:
            return self.cgroup.usage()
        except Exception:  # noqa: BLE001 - the cgroup may be going away right now
            return None

    def write_input(self, data: bytes) -> None:
        """Input for the sandbox, never blocking the agent: what the pipe does not take now waits
        in a bounded buffer; a sandbox that does not read is stopped."""
        if self.stdin is None:
            raise BrokenPipeError("the sandbox's input is closed")
        self.pending_in += data
        if len(self.pending_in) > MAX_PENDING_INPUT:
            self.stop(0)
            raise BrokenPipeError("the sandbox does not read its input")
        self._flush_input()

    def _flush_input(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending_in and self.stdin is not None:
                done = os.write(self.stdin, self.pending_in)
                del self.pending_in[:done]
        except BlockingIOError:
            pass
        except OSError:
            self.pending_in.clear()
        if self.stdin is not None:
            loop.remove_writer(self.stdin)
            if self.pending_in:
                loop.add_writer(self.stdin, self._flush_input)

    # ---- the end ---------------------------------------------------------------------------

    async def _finish_surely(self) -> None:
        """`_finish`; if it breaks half-way, the job still ends (saying why): a job never stays
        RUNNING because its clean-up failed (out of descriptors, a cgroup that will not go)."""
        try:
            await self._finish()
        except Exception as exc:  # noqa: BLE001
            QUIET.say("finish", f"job {self.job_id}: clean-up failed: {exc!r}")
            if not self.ended:
                self.ended = True
                self.events.ended(Ending(setup=f"the agent could not clean up after the sandbox: {exc}"))

    async def _finish(self) -> None:
        """Usage and OOM from the cgroup, then everything the sandbox held released."""
        for timer in self.timers:
            timer.cancel()
        ending = Ending(setup=self.network_error)
        usage = self.usage()
        if usage is not None:
            ending.cpu_s, ending.memory_peak_bytes = round(usage.cpu_s, 3), usage.memory_peak_bytes
            try:
                ending.oom = self.cgroup.oom_killed()
            except Exception:  # noqa: BLE001 - best effort, the cleanup is not
                pass
        try:
            await until_descriptors(self.cgroup.remove, f"removing job {self.job_id}'s cgroup")
        except cgroups.CgroupError as exc:  # left for the start-up sweep; the job still ends
            QUIET.say("cgroup-remove", f"job {self.job_id}: {exc}")
        if self.stdin is not None:
            asyncio.get_running_loop().remove_writer(self.stdin)
            os.close(self.stdin)
            self.stdin = None
        if self.go_fd is not None:
            os.close(self.go_fd)
            self.go_fd = None
        if self.attaching is not None:
            await asyncio.gather(self.attaching, return_exceptions=True)  # release after attach, never before
        ending.setup = self.network_error
        if self.spec.network != "none" and self.executor.network is not None:
            self.executor.network.release(self.job_id)
        try:
            Path(self.spec.root_dir).rmdir()
        except FileNotFoundError:
            pass
        if self.init_pidfd is not None:
            os.close(self.init_pidfd)
            self.init_pidfd = None
        self.ended = True
        self.events.ended(ending)

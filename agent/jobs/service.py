"""JobService: validates requests, runs them in sandboxes, records how they ended.

It knows nothing about HTTP (api/app.py translates) and nothing about mounts (the sandbox package
builds them from a SandboxSpec). The job type is set here, never taken from a request.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from . import spec as jobspec
from ..audit import AuditLog
from ..auth import Principal
from ..config import AgentConfig
from ..contract import JobStatus, JobType
from ..errors import BadRequest, Conflict, NotFound
from ..fs import FileInfo, UnsafePath, list_files, open_beneath
from ..models import JobLimits, JobRecord, JobRequest, Usage
from ..paths import AgentPaths
from ..sandbox import cgroups, status
from ..sandbox.spec import Mount, SandboxSpec
from .launcher_client import JobPipes, Launcher
from .quota import QuotaKeeper
from .spec import RuntimeMounts
from .sinks import JobLog, SandboxSink
from .store import JobStore
from .verdict import SandboxOutcome, Verdict, decide

MAX_LISTED_FILES = 10_000  # a job can leave many empty files; a listing stays a bounded answer
SANDBOX_OVERHEAD_PIDS = 2  # stage 1 and the init live in the job's cgroup too
MAX_PENDING_INPUT = 64 << 20  # input an attached sandbox has not read yet

RuntimeResolver = Callable[[str], RuntimeMounts]
BuildSpecMaker = Callable[[JobRecord, int, cgroups.CgroupLimits], SandboxSpec]
"""(record, uid, cgroup limits) -> the builder's sandbox spec."""
BuildPipeline = Callable[[JobRecord, Verdict], Awaitable[Verdict]]
"""The builder sandbox's verdict -> the build job's final verdict."""


class JobNetwork(Protocol):
    """Outside set-up of a job's network namespace (bridge mode); see network/bridge.py."""

    def attach(self, job_id: str, init_pid: int) -> dict[str, Any]: ...

    def release(self, job_id: str) -> None: ...


def _no_runtimes(name: str) -> RuntimeMounts:
    raise BadRequest(f"unknown runtime {name!r}: this agent has no published runtimes")


@dataclass
class LiveJob:
    """What the service keeps about a job while its sandbox exists."""

    record: JobRecord
    cgroup: cgroups.JobCgroup
    uid_slot: int
    init_pid: int | None = None
    stop_reason: str | None = None
    outputs: list[str] = field(default_factory=list)
    outcome: SandboxOutcome = field(default_factory=SandboxOutcome)
    cell: bool = False                  # a script: its runner may leave a last value and figures
    open_streams: int = 3
    go_fd: int | None = None
    attaching: asyncio.Task[None] | None = None   # the network set-up of a bridge job, off the loop
    hold_exit: bool = False             # a runtime build: the RuntimeService ends the record
    verdict: Verdict | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    sink: SandboxSink | None = None     # where output and the end go: the job's log, or a session
    stdin: int | None = None            # a session's: the write end of its runner's input
    pending_in: bytearray = field(default_factory=bytearray)


class JobService:
    def __init__(self, paths: AgentPaths, config: AgentConfig, driver: cgroups.CgroupDriver,
                 launcher: Launcher, runtimes: RuntimeResolver = _no_runtimes,
                 network: JobNetwork | None = None, audit: AuditLog | None = None) -> None:
        self.paths = paths
        self.audit = audit or AuditLog(paths.logs / "audit.log")
        self.config = config
        self.driver = driver
        self.launcher = launcher
        self.resolve_runtime = runtimes
        self.network = network
        self.store = JobStore(paths.job_state)
        self.quota = QuotaKeeper(self.store, config)
        self.live: dict[str, LiveJob] = {}
        self._slots: set[int] = set()
        self.io_device = cgroups.whole_disk_of(str(paths.root))

    # ---- queries -------------------------------------------------------------------------

    def list_jobs(self, who: Principal) -> list[JobRecord]:
        return self.store.visible_to(who)

    def get(self, who: Principal, job_id: str) -> JobRecord:
        record = self.store.get_for(who, job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r} (list yours with GET /v1/jobs)")
        live = self.live.get(job_id)
        if live is not None and record.status == JobStatus.RUNNING:
            self._sample_usage(live)
        return record

    def _sample_usage(self, live: LiveJob) -> None:
        """CPU and peak memory so far, from the job's cgroup (a few small file reads), so a
        status line can show them while the job runs."""
        try:
            u = live.cgroup.usage()
        except Exception:  # noqa: BLE001 - the cgroup may be going away right now
            return
        live.record.usage = Usage(cpu_s=round(u.cpu_s, 3), memory_peak_bytes=u.memory_peak_bytes)

    def runtime_users(self, name: str) -> int:
        """How many running production jobs mount runtime `name` (its removal waits for none)."""
        return sum(1 for live in self.live.values()
                   if live.record.runtime == name and live.record.type == JobType.STANDARD)

    @property
    def has_network(self) -> bool:
        return self.network is not None

    async def events(self, who: Principal, job_id: str, after: int, follow: bool) -> AsyncIterator[dict[str, Any]]:
        self.get(who, job_id)
        return self.store.log(job_id).follow(after=after, follow=follow)

    def _kept_work(self, who: Principal, job_id: str) -> str:
        """Where the /work copy of a finished job is kept (what downloads and listings serve)."""
        record = self.get(who, job_id)
        if not record.status.finished:
            raise Conflict(f"job {job_id} is still running: its /work files can be fetched when it ends")
        return str(self.store.artifacts(job_id))

    def list_files(self, who: Principal, job_id: str) -> tuple[list[FileInfo], bool]:
        """The regular files a finished job left in /work, and whether the list was cut short."""
        try:
            return list_files(self._kept_work(who, job_id), MAX_LISTED_FILES)
        except FileNotFoundError:
            return [], False  # a job whose sandbox was never made kept no /work

    def open_file(self, who: Principal, job_id: str, path: str) -> int:
        work = self._kept_work(who, job_id)
        try:
            return open_beneath(work, path)
        except UnsafePath as exc:
            raise BadRequest(str(exc)) from None
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"job {job_id} left no file {path!r} in /work") from None
        except OSError as exc:
            raise NotFound(f"cannot open {path!r}: {exc.strerror} (symlinks are not followed)") from None

    # ---- commands ------------------------------------------------------------------------

    async def start(self, who: Principal, req: JobRequest, runtime_mounts: RuntimeMounts | None = None) -> JobRecord:
        if req.network != "none" and self.network is None:
            raise BadRequest(f"network {req.network!r} is not available on this agent; use 'none'")
        # runtime_mounts: a candidate runtime under test (RuntimeService only; no request reaches it)
        runtime = runtime_mounts or (self.resolve_runtime(req.runtime) if req.runtime else None)
        limits = jobspec.effective_limits(req.limits, self.config.defaults, self.config.max_limits, who.policy)
        self.quota.admit_job(who)
        job_id = secrets.token_hex(8)
        record = JobRecord(id=job_id, type=JobType.STANDARD, owner=who.id, runtime=req.runtime,
                           limits=limits, network=req.network, command=req.command, created_at=time.time())
        live = self._admit(record, outputs=list(req.outputs))
        live.cell = req.script is not None
        spec = jobspec.standard_spec(record, req, runtime, self.config.uid_base + live.uid_slot,
                                     self.paths.jobs / record.id, self.store.artifacts(record.id),
                                     self._cgroup_limits(record.limits))
        return await self._launch(live, spec)

    async def start_attached(self, who: Principal, sandbox_id: str, req: JobRequest, runtime: RuntimeMounts | None,
                             sink: SandboxSink, mounts: list[Mount]) -> LiveJob:
        """A production sandbox that is not a job: no record, no log, nothing under /v1/jobs. Its
        output and end go to `sink`, its stdin is a pipe (`write_stdin`). A session's sandbox:
        the same spec, limits, runtime, network and launcher as a job's."""
        if req.network != "none" and self.network is None:
            raise BadRequest(f"network {req.network!r} is not available on this agent; use 'none'")
        limits = jobspec.effective_limits(req.limits, self.config.defaults, self.config.max_limits, who.policy)
        record = JobRecord(id=sandbox_id, type=JobType.STANDARD, owner=who.id, runtime=req.runtime,
                           limits=limits, network=req.network, command=req.command, created_at=time.time())
        live = self._admit(record, stored=False)
        live.sink = sink
        spec = jobspec.standard_spec(record, req, runtime, self.config.uid_base + live.uid_slot,
                                     self.paths.jobs / record.id, None, self._cgroup_limits(record.limits))
        spec.mounts += mounts
        spec.stdin_pipe = True
        await self._launch(live, spec)
        return live

    def write_stdin(self, live: LiveJob, data: bytes) -> None:
        """Input for an attached sandbox, never blocking the agent: what the pipe does not take now
        waits in a bounded buffer; a sandbox that does not read is stopped."""
        if live.stdin is None:
            raise BrokenPipeError("the sandbox's input is closed")
        live.pending_in += data
        if len(live.pending_in) > MAX_PENDING_INPUT:
            self._signal_stop(live, "stopped", grace=0)
            raise BrokenPipeError("the sandbox does not read its input")
        self._flush_stdin(live)

    def _flush_stdin(self, live: LiveJob) -> None:
        loop = asyncio.get_running_loop()
        try:
            while live.pending_in and live.stdin is not None:
                done = os.write(live.stdin, live.pending_in)
                del live.pending_in[:done]
        except BlockingIOError:
            pass
        except OSError:
            live.pending_in.clear()
        if live.stdin is not None:
            loop.remove_writer(live.stdin)
            if live.pending_in:
                loop.add_writer(live.stdin, self._flush_stdin, live)

    def signal(self, live: LiveJob, sig: int) -> None:
        """A signal to the sandbox's init, which forwards it to the program's process group."""
        if live.init_pid is not None and not live.done.is_set():
            _kill(live.init_pid, sig)

    def end(self, live: LiveJob, reason: str = "stopped") -> None:
        """End an attached sandbox at once (SIGKILL); its sink hears how it ended."""
        self._signal_stop(live, reason, grace=0)

    def usage_of(self, live: LiveJob) -> Usage:
        self._sample_usage(live)
        return live.record.usage

    async def start_build(self, who: Principal, runtime: str, limits: JobLimits, network: str, command: list[str],
                          make_spec: BuildSpecMaker, pipeline: BuildPipeline,
                          first_event: dict[str, Any] | None = None) -> JobRecord:
        """A runtime-build job, for the RuntimeService only: the type is set here, never by a request.

        The builder sandbox is the job's sandbox, but its end does not end the job: `pipeline` gets
        the sandbox's verdict, runs the later phases (cleanup, manifest, test, publish) and returns
        the job's final verdict."""
        if network != "none" and self.network is None:
            raise BadRequest(f"network {network!r} is not available on this agent")
        record = JobRecord(id=secrets.token_hex(8), type=JobType.RUNTIME_BUILD, owner=who.id,
                           runtime=runtime, limits=limits, network=network, command=command, created_at=time.time())
        live = self._admit(record)
        live.hold_exit = True
        if first_event:
            self.store.log(record.id).append(first_event)
        try:
            spec = make_spec(record, self.config.uid_base + live.uid_slot, self._cgroup_limits(limits))
        except Exception as exc:  # noqa: BLE001 - reported as a setup failure
            live.verdict = Verdict(JobStatus.FAILED, "setup", f"phase setup failed: the builder sandbox: {exc}")
            self._slots.discard(live.uid_slot)
            live.done.set()
        else:
            await self._launch(live, spec)
        asyncio.get_running_loop().create_task(self._after_build(live, pipeline))
        return record

    async def _after_build(self, live: LiveJob, pipeline: BuildPipeline) -> None:
        await live.done.wait()
        verdict = live.verdict or Verdict(JobStatus.FAILED, "setup", "the builder ended without a verdict")
        try:
            verdict = await pipeline(live.record, verdict)
        except Exception as exc:  # noqa: BLE001 - a bug in a later phase still ends the job
            verdict = verdict.failed("setup", f"build pipeline: {type(exc).__name__}: {exc}")
        self.finish_record(live.record, verdict)

    def _admit(self, record: JobRecord, outputs: list[str] | None = None, stored: bool = True) -> LiveJob:
        """Store the record (a job's) and take a uid slot. The job's cgroup is made and joined ahead
        of time by the sandbox stage that takes the job, which renames it `job-<id>` and writes its
        limits."""
        slot = self._take_slot()  # first: a refusal (too many jobs) must leave no record behind
        if stored:
            self.store.add(record)
            self.store.log(record.id)
        self.audit.write("start", job=record.id, type=record.type, owner=record.owner, runtime=record.runtime,
                         limits=record.limits.model_dump(exclude_none=True), network=record.network,
                         command=record.command, attached=not stored)
        live = LiveJob(record=record, cgroup=self.driver.open(f"job-{record.id}"), uid_slot=slot,
                       outputs=outputs or [])
        live.sink = JobLog(self, live) if stored else None
        return live

    def _cgroup_limits(self, limits: JobLimits) -> cgroups.CgroupLimits:
        return cgroups.CgroupLimits(
            cpu_percent=limits.cpu_percent, memory_mb=limits.memory_mb,
            pids=(limits.pids + SANDBOX_OVERHEAD_PIDS) if limits.pids else None,
            io_bps=limits.io_bps or None, io_device=self.io_device if limits.io_bps else None)

    async def _launch(self, live: LiveJob, spec: SandboxSpec) -> JobRecord:
        """Hand a spec to the launcher and watch the sandbox; any failure becomes reason setup."""
        record = live.record
        self.live[record.id] = live
        Path(spec.root_dir).mkdir(mode=0o700)
        try:
            pipes = self.launcher.launch(spec, wait_for_go=record.network != "none")
            live.go_fd, live.stdin = pipes.go, pipes.stdin
            if live.stdin is not None:
                os.set_blocking(live.stdin, False)
        except Exception as exc:  # noqa: BLE001 - reported as a setup failure, never a 500
            live.outcome.take(status.setup_error(f"launching the sandbox: {exc}"))
            await self._finalize(live)
            return record
        self._watch(live, pipes)
        return record

    async def stop(self, who: Principal, job_id: str, reason: str = "stopped") -> JobRecord:
        record = self.get(who, job_id)
        live = self.live.get(job_id)
        if live is not None:
            self.audit.write("stop", job=job_id, by=who.id, role=who.role)
            self._signal_stop(live, reason)
        return record

    async def wait(self, job_id: str) -> JobRecord | None:
        """The job's record once its sandbox is gone (None if it was deleted meanwhile)."""
        live = self.live.get(job_id)
        if live is not None:
            await live.done.wait()
        return self.store.records.get(job_id)

    def append_event(self, job_id: str, event: dict[str, Any]) -> None:
        """An event of the agent's own in a job's log (a build's progress, its test's output)."""
        self.store.log(job_id).append(event)

    def delete(self, who: Principal, job_id: str) -> None:
        record = self.get(who, job_id)
        if not record.status.finished:
            raise Conflict(f"job {job_id} is {record.status.value}: stop it first (POST /v1/jobs/{job_id}/stop)")
        self.audit.write("delete", job=job_id, by=who.id, role=who.role)
        self.store.remove(job_id)

    async def shutdown(self) -> None:
        """Stop every live job and wait for its cleanup (clean agent shutdown)."""
        for live in list(self.live.values()):
            self._signal_stop(live, "stopped", grace=0.5)
        for live in list(self.live.values()):
            try:
                await asyncio.wait_for(live.done.wait(), timeout=15)
            except asyncio.TimeoutError:
                live.cgroup.kill()

    # ---- uid slots -----------------------------------------------------------------------

    def _take_slot(self) -> int:
        for _ in range(1000):
            slot = secrets.randbelow(self.config.uid_slots)
            if slot not in self._slots:
                self._slots.add(slot)
                return slot
        raise Conflict("no free job uid: too many jobs are running")

    # ---- watching a sandbox --------------------------------------------------------------

    def _watch(self, live: LiveJob, pipes: JobPipes) -> None:
        loop = asyncio.get_running_loop()
        for fd, kind in ((pipes.stdout, "stdout"), (pipes.stderr, "stderr")):
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._on_output, live, fd, kind)
        os.set_blocking(pipes.status, False)
        loop.add_reader(pipes.status, self._on_status, live, pipes.status, bytearray())

    def _on_output(self, live: LiveJob, fd: int, kind: str) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        assert live.sink is not None
        live.sink.output(kind, data)
        if not data:
            self._close_stream(live, fd)

    def _on_status(self, live: LiveJob, fd: int, buffer: bytearray) -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        buffer.extend(data)
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            self._on_event(live, status.parse(line))
        if not data:
            self._close_stream(live, fd)

    def _on_event(self, live: LiveJob, msg: status.Message) -> None:
        kind = msg.kind
        if kind is status.Kind.STARTED and msg.pid is not None:
            live.init_pid = msg.pid
            if live.stop_reason:
                self._signal_stop(live, live.stop_reason, grace=0)
            if live.go_fd is not None:
                live.attaching = asyncio.get_running_loop().create_task(self._release_go(live))
        elif kind is status.Kind.RUNNING:
            record = live.record
            record.status, record.started_at = JobStatus.RUNNING, time.time()
            assert live.sink is not None
            live.sink.running()
            if record.limits.timeout_s:
                live.timers.append(asyncio.get_running_loop().call_later(
                    record.limits.timeout_s, self._signal_stop, live, "timeout"))
        elif kind in status.TERMINAL:
            live.outcome.take(msg)
            if kind is status.Kind.EXEC_ERROR and live.sink is not None:
                live.sink.note((msg.message or "") + "\n")
        elif kind is status.Kind.ARTIFACTS_ERROR and live.sink is not None:
            live.sink.note(f"[joblet] /work files: {msg.message}\n")

    async def _release_go(self, live: LiveJob) -> None:
        """Set up the job's network from outside (in a thread: netlink work never blocks the event
        loop), then let the init go on; EOF on the pipe aborts it."""
        if live.go_fd is None:
            return
        go, live.go_fd = live.go_fd, None
        try:
            if not live.stop_reason and self.network is not None and live.init_pid is not None:
                await asyncio.to_thread(self.network.attach, live.record.id, live.init_pid)
                os.write(go, b"g")
        except Exception as exc:  # noqa: BLE001 - the init sees EOF and reports reason setup
            live.outcome.network_error = live.outcome.network_error or f"network: {exc}"
        finally:
            os.close(go)

    def _close_stream(self, live: LiveJob, fd: int) -> None:
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        live.open_streams -= 1
        if live.open_streams == 0:
            asyncio.get_running_loop().create_task(self._finalize(live))

    def _signal_stop(self, live: LiveJob, reason: str, grace: float | None = None) -> None:
        if live.record.status.finished:
            return
        if live.stop_reason is None:
            live.stop_reason = reason
        if live.init_pid is None:
            return  # the "started" event will deliver it
        grace = self.config.stop_grace_s if grace is None else grace
        _kill(live.init_pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if grace > 0:
            live.timers.append(asyncio.get_running_loop().call_later(grace, self._force_kill, live))

    def _force_kill(self, live: LiveJob) -> None:
        if live.init_pid is not None and not live.done.is_set():
            _kill(live.init_pid, signal.SIGKILL)

    # ---- the end of a job ----------------------------------------------------------------

    async def _finalize(self, live: LiveJob) -> None:
        for timer in live.timers:
            timer.cancel()
        record = live.record
        oom = False
        try:
            u = live.cgroup.usage()
            record.usage = Usage(cpu_s=round(u.cpu_s, 3), memory_peak_bytes=u.memory_peak_bytes)
            oom = live.cgroup.oom_killed()
        except Exception:  # noqa: BLE001 - usage is best effort, cleanup is not
            pass
        live.cgroup.remove()
        if live.stdin is not None:
            asyncio.get_running_loop().remove_writer(live.stdin)
            os.close(live.stdin)
            live.stdin = None
        if live.go_fd is not None:
            os.close(live.go_fd)
            live.go_fd = None
        if live.attaching is not None:
            await asyncio.gather(live.attaching, return_exceptions=True)  # release after attach, never before
        if record.network != "none" and self.network is not None:
            self.network.release(record.id)
        _rmdir(Path(self.paths.jobs / record.id))
        self._slots.discard(live.uid_slot)
        verdict = decide(live.outcome, live.stop_reason, oom, record.limits)
        assert live.sink is not None
        live.sink.ended(verdict)
        self.live.pop(record.id, None)
        live.done.set()

    def finish_record(self, record: JobRecord, verdict: Verdict) -> None:
        self.store.finish(record, verdict)
        self.audit.write("end", job=record.id, owner=record.owner, status=verdict.status.value,
                         reason=verdict.reason, exit_code=verdict.exit_code, signal=verdict.signal,
                         cpu_s=record.usage.cpu_s, memory_peak_bytes=record.usage.memory_peak_bytes)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass

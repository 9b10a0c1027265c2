"""JobService: validates requests, runs them in sandboxes, records how they ended.

It knows nothing about HTTP (api/app.py translates) and nothing about mounts (the sandbox package
builds them from a SandboxSpec). The job type is set here, never taken from a request.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, Awaitable, Callable

from . import spec as jobspec
from ..audit import AuditLog
from ..auth import Principal
from ..cluster.executor import Ending
from ..cluster.launcher_client import Launcher
from ..cluster.local import JobNetwork, LocalExecutor
from ..cluster.slurm_executor import SlurmExecutor
from ..config import AgentConfig
from ..contract import JobStatus, JobType
from ..errors import BadRequest, Conflict, NotFound
from ..fs import FileInfo, UnsafePath, list_files, open_beneath, remove_tree
from ..models import JobLimits, JobRecord, JobRequest, KeptWork, Usage
from ..paths import AgentPaths
from ..sandbox import cgroups, status
from ..sandbox.spec import Mount, SandboxSpec
from .ears import SandboxEars
from .livejob import LiveJob, SandboxSink
from .quota import QuotaKeeper
from .spec import RuntimeMounts
from .sinks import JobLog
from .store import JobStore
from .verdict import Verdict, decide

MAX_LISTED_FILES = 10_000  # a job can leave many empty files; a listing stays a bounded answer
SANDBOX_OVERHEAD_PIDS = 2  # stage 1 and the init live in the job's cgroup too

RuntimeResolver = Callable[[str], RuntimeMounts]
BaseSource = Callable[[], Awaitable[RuntimeMounts]]
"""The verified base image production jobs get as /usr (built first if it is missing), or Unavailable."""
BuildSpecMaker = Callable[[JobRecord, int, cgroups.CgroupLimits], SandboxSpec]
"""(record, uid, cgroup limits) -> the builder's sandbox spec."""
BuildPipeline = Callable[[JobRecord, Verdict], Awaitable[Verdict]]
"""The builder sandbox's verdict -> the build job's final verdict."""


def _no_runtimes(name: str) -> RuntimeMounts:
    raise BadRequest(f"unknown runtime {name!r}: this agent has no published runtimes")


class JobService:
    def __init__(self, paths: AgentPaths, config: AgentConfig, driver: cgroups.CgroupDriver,
                 launcher: Launcher, runtimes: RuntimeResolver = _no_runtimes,
                 network: JobNetwork | None = None, audit: AuditLog | None = None,
                 cluster: SlurmExecutor | None = None) -> None:
        self.paths = paths
        self.audit = audit or AuditLog(paths.logs / "audit.log")
        self.config = config
        self.driver = driver
        self.resolve_runtime = runtimes
        self.base: BaseSource | None = None   # None: jobs see the host's /usr (config `base: host`)
        self.network = network
        self.local = LocalExecutor(launcher, driver, network, config.stop_grace_s)
        self.cluster = cluster          # executor: slurm places standard jobs and sessions
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
        """CPU and peak memory so far, where the executor can see them (a local job's cgroup: a
        few small file reads), so a status line can show them while the job runs."""
        u = live.execution.usage() if live.execution is not None else None
        if u is not None:
            live.record.usage = Usage(cpu_s=round(u.cpu_s, 3), memory_peak_bytes=u.memory_peak_bytes)

    def runtime_users(self, name: str) -> int:
        """How many running production jobs mount runtime `name` (its removal waits for none);
        every one of them mounts the base image, when there is one."""
        every = name == jobspec.BASE_RUNTIME and self.base is not None
        return sum(1 for live in self.live.values()
                   if (every or live.record.runtime == name) and live.record.type == JobType.STANDARD)

    async def _system(self, runtime: RuntimeMounts | None) -> tuple[RuntimeMounts | None, RuntimeMounts | None]:
        """A job's base image, its /usr (None: the host's), and the runtime it mounts. A job that
        names the base (its build's own test among them) gets it as /usr, not as a runtime mount."""
        if runtime is not None and runtime.name == jobspec.BASE_RUNTIME:
            return runtime, None
        if self.base is None:
            return None, runtime
        return await self.base(), runtime

    @property
    def has_network(self) -> bool:
        return self.network is not None

    async def events(self, who: Principal, job_id: str, after: int, follow: bool) -> AsyncIterator[dict[str, Any]]:
        self.get(who, job_id)
        return self.store.log(job_id).follow(after=after, follow=follow)

    async def event_lines(self, who: Principal, job_id: str, after: int, follow: bool) -> AsyncIterator[bytes]:
        """`events` as NDJSON bytes straight from the log (what the HTTP stream sends)."""
        self.get(who, job_id)
        return self.store.log(job_id).follow_lines(after=after, follow=follow)

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
        # runtime_mounts: a candidate runtime under test (RuntimeService only; no request reaches
        # it): it exists on this host only, so its test runs here whatever the executor is
        local = runtime_mounts is not None or self.cluster is None
        limits = self._checked_limits(who, req, local)
        runtime = runtime_mounts or (self.resolve_runtime(req.runtime) if req.runtime else None)
        base, runtime = await self._system(runtime)
        self.quota.admit_job(who)
        job_id = secrets.token_hex(8)
        record = JobRecord(id=job_id, type=JobType.STANDARD, owner=who.id, runtime=req.runtime,
                           limits=limits, network=req.network, command=req.command, created_at=time.time())
        live = self._admit(record, outputs=list(req.outputs))
        live.cell = req.script is not None
        live.local = local
        spec = jobspec.standard_spec(record, req, runtime, self.config.uid_base + live.uid_slot,
                                     self.paths.jobs / record.id, self.store.artifacts(record.id),
                                     self._cgroup_limits(record.limits), self._refuse_tcp, base)
        assert live.budget is not None
        spec.work_files, spec.work_bytes = live.budget.files, live.budget.bytes
        self._launch(live, spec, runtime, base)
        return record

    @property
    def _refuse_tcp(self) -> bool:
        return self.config.network.none_tcp == "refuse"

    def _checked_limits(self, who: Principal, req: JobRequest, local: bool) -> JobLimits:
        """The request's effective limits, refused (400) where the executor could never meet them:
        a network or GPUs this host does not give, an ask no node of the cluster could fit."""
        if req.network != "none" and (self.network is None or not local):
            where = "this agent" if local else "jobs that go through Slurm"
            raise BadRequest(f"network {req.network!r} is not available for {where}; use 'none'")
        limits = jobspec.effective_limits(req.limits, self.config.defaults, self.config.max_limits, who.policy)
        if local and limits.gpus:
            raise BadRequest(f"limits.gpus: {limits.gpus} GPUs asked, and this agent runs jobs on its own "
                             f"host, which hands out none (GPUs come with executor: slurm)")
        if not local:
            assert self.cluster is not None
            self.cluster.check(limits)
        return limits

    async def start_attached(self, who: Principal, sandbox_id: str, req: JobRequest, runtime: RuntimeMounts | None,
                             sink: SandboxSink, mounts: list[Mount]) -> LiveJob:
        """A production sandbox that is not a job: no record, no log, nothing under /v1/jobs. Its
        output and end go to `sink`, its stdin is a pipe (`write_stdin`). A session's sandbox:
        the same spec, limits, runtime, network and launcher as a job's."""
        limits = self._checked_limits(who, req, self.cluster is None)
        base, runtime = await self._system(runtime)
        record = JobRecord(id=sandbox_id, type=JobType.STANDARD, owner=who.id, runtime=req.runtime,
                           limits=limits, network=req.network, command=req.command, created_at=time.time())
        live = self._admit(record, stored=False)
        live.sink = sink
        live.local = self.cluster is None
        spec = jobspec.standard_spec(record, req, runtime, self.config.uid_base + live.uid_slot,
                                     self.paths.jobs / record.id, None, self._cgroup_limits(record.limits),
                                     self._refuse_tcp, base)
        spec.mounts += mounts
        live.extra_mounts = list(mounts)
        spec.stdin_pipe = True
        self._launch(live, spec, runtime, base)
        return live

    def write_stdin(self, live: LiveJob, data: bytes) -> None:
        """Input for an attached sandbox, never blocking the agent (the executor buffers it, bounded;
        a sandbox that does not read is stopped)."""
        if live.execution is None:
            raise BrokenPipeError("the sandbox's input is closed")
        live.execution.write_input(data)

    def signal(self, live: LiveJob, sig: int) -> None:
        """A signal for the sandbox's program (its init forwards it to the program's process group)."""
        if live.execution is not None and not live.done.is_set():
            live.execution.signal(sig)

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
            self._launch(live, spec)
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
        budget = self.quota.admit(record.owner, [(lv.record.owner, lv.budget) for lv in self.live.values()],
                                  stored, (record.limits.disk_mb or 0) << 20)  # a refusal leaves no record
        slot = self._take_slot()
        if stored:
            self.store.add(record)
            self.store.log(record.id)
        self.audit.write("start", job=record.id, type=record.type, owner=record.owner, runtime=record.runtime,
                         limits=record.limits.model_dump(exclude_none=True), network=record.network,
                         command=record.command, attached=not stored)
        live = LiveJob(record=record, uid_slot=slot, outputs=outputs or [])
        live.sink = JobLog(self, live) if stored else None
        live.budget = budget
        return live

    def _cgroup_limits(self, limits: JobLimits) -> cgroups.CgroupLimits:
        return cgroups.CgroupLimits(
            cpu_percent=limits.cpu_percent, memory_mb=limits.memory_mb,
            pids=(limits.pids + SANDBOX_OVERHEAD_PIDS) if limits.pids else None,
            io_bps=limits.io_bps or None, io_device=self.io_device if limits.io_bps else None)

    def _launch(self, live: LiveJob, spec: SandboxSpec, runtime: RuntimeMounts | None = None,
                base: RuntimeMounts | None = None) -> None:
        """Hand the spec to the job's executor; from here on its sandbox reports to `SandboxEars`."""
        self.live[live.record.id] = live
        ears = SandboxEars(self, live)
        if live.local:
            live.execution = self.local.start(spec, ears)
        else:
            assert self.cluster is not None
            live.execution = self.cluster.start(spec, live.record.limits, runtime, ears,
                                                self.paths.state / "slurm" / live.record.id, live.extra_mounts, base)

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

    async def delete(self, who: Principal, job_id: str) -> None:
        record = self.get(who, job_id)
        if not record.status.finished:
            raise Conflict(f"job {job_id} is {record.status.value}: stop it first (POST /v1/jobs/{job_id}/stop)")
        self.audit.write("delete", job=job_id, by=who.id, role=who.role)
        await self.remove_record(job_id)

    async def remove_record(self, job_id: str) -> None:
        """Gone from every call at once; its folder (which may hold many files) goes on a worker
        thread, so that the event loop serves others meanwhile."""
        folder = self.store.forget(job_id)
        await asyncio.to_thread(remove_tree, str(folder))

    async def shutdown(self) -> None:
        """Stop every live job and wait for its cleanup (clean agent shutdown)."""
        for live in list(self.live.values()):
            self._signal_stop(live, "stopped", grace=0.5)
        for live in list(self.live.values()):
            try:
                await asyncio.wait_for(live.done.wait(), timeout=15)
            except asyncio.TimeoutError:
                if live.execution is not None:
                    live.execution.kill()

    # ---- uid slots -----------------------------------------------------------------------

    def _take_slot(self) -> int:
        for _ in range(1000):
            slot = secrets.randbelow(self.config.uid_slots)
            if slot not in self._slots:
                self._slots.add(slot)
                return slot
        raise Conflict("no free job uid: too many jobs are running")

    # ---- what a sandbox reports ---------------------------------------------------------

    def on_status(self, live: LiveJob, msg: status.Message) -> None:
        kind = msg.kind
        if kind is status.Kind.RUNNING:
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
        elif kind is status.Kind.DONE:
            live.kept = KeptWork(files=msg.files or 0, bytes=msg.size or 0)
        elif kind is status.Kind.ARTIFACTS_ERROR and live.sink is not None:
            live.sink.note(f"[joblet] /work files: {msg.message}\n")

    def _signal_stop(self, live: LiveJob, reason: str, grace: float | None = None) -> None:
        if live.record.status.finished:
            return
        if live.stop_reason is None:
            live.stop_reason = reason
        if live.execution is not None:
            live.execution.stop(grace)

    # ---- the end of a job ----------------------------------------------------------------

    def on_ended(self, live: LiveJob, ending: Ending) -> None:
        """Nothing of the sandbox is left: the verdict, from what the sandbox reported, what the
        agent did to it, and what the executor knows (its node was lost, Slurm refused it)."""
        for timer in live.timers:
            timer.cancel()
        record = live.record
        if ending.cpu_s is not None or ending.memory_peak_bytes is not None:
            record.usage = Usage(cpu_s=ending.cpu_s, memory_peak_bytes=ending.memory_peak_bytes)
        self._slots.discard(live.uid_slot)
        if ending.setup:
            live.outcome.take(status.setup_error(ending.setup))
        verdict = decide(live.outcome, live.stop_reason or ending.stop, ending.oom, record.limits)
        if ending.lost and not live.stop_reason and verdict.reason != "setup":
            verdict = Verdict(JobStatus.FAILED, "lost", ending.lost, verdict.exit_code, verdict.signal)
        assert live.sink is not None
        live.sink.ended(verdict)
        self.live.pop(record.id, None)
        live.done.set()

    def finish_record(self, record: JobRecord, verdict: Verdict) -> None:
        self.store.finish(record, verdict)
        self.audit.write("end", job=record.id, owner=record.owner, status=verdict.status.value,
                         reason=verdict.reason, exit_code=verdict.exit_code, signal=verdict.signal,
                         cpu_s=record.usage.cpu_s, memory_peak_bytes=record.usage.memory_peak_bytes)


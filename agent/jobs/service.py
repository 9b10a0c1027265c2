"""JobService: validates requests, runs them in sandboxes, records how they ended.

It knows nothing about HTTP (api/app.py translates) and nothing about mounts (the sandbox package
builds them from a SandboxSpec). The job type is set here, never taken from a request.

On this host a job's sandbox is held by a holder that outlives the agent (cluster/local.py,
sandbox/holder.py): it writes the job's log itself, and the service keeps the record and writes
the last events once the holder is gone. `restore.py` gives the service back the jobs an earlier
life of the agent left running (`adopt`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Awaitable, Callable

from . import spec as jobspec
from ..audit import AuditLog
from ..auth import Principal
from ..cluster.executor import Execution
from ..cluster.holder_link import Checked, LaunchNote
from ..cluster.launcher_client import Launcher
from ..cluster.local import JobNetwork, LocalExecution, LocalExecutor
from ..cluster.slurm_executor import SlurmExecutor
from ..config import AgentConfig
from ..contract import JobStatus, JobType
from ..errors import BadRequest, Conflict, NotFound
from ..fs import FileInfo, UnsafePath, list_files, open_beneath, remove_tree
from ..models import JobLimits, JobRecord, JobRequest, KeptWork, Usage
from ..paths import AgentPaths
from ..sandbox import cgroups
from ..sandbox.outcome import Outcome
from ..sandbox.output import Step, Translator, translator_for
from ..sandbox.spec import SandboxSpec, WorkFile
from .ears import SandboxEars
from .quota import QuotaKeeper
from .spare import SpareFolders
from .spec import RuntimeMounts
from .livejob import Cleanups, LiveJob, SandboxSink
from .sinks import JobLog
from .loglines import LogRange
from .jobstore import JobStore
from .verdict import Verdict

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
        self.local = LocalExecutor(launcher, driver, network, config.stop_grace_s, config.max_output_mb << 20,
                                   paths.jobs)
        self.cluster = cluster          # executor: slurm places standard jobs and sessions
        spares = SpareFolders(paths.state / "spare")
        spares.clear()  # what an earlier life of the agent made and did not use
        self.store = JobStore(paths.job_state, spares)
        self.quota = QuotaKeeper(self.store, config)
        self.live: dict[str, LiveJob] = {}
        self.cleanups = Cleanups()      # what ended jobs held, still being removed
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

    async def event_lines(self, who: Principal, job_id: str, after: int,
                          follow: bool) -> AsyncIterator[memoryview | LogRange]:
        """`events` as NDJSON bytes straight from the log (what the HTTP stream sends)."""
        self.get(who, job_id)
        return self.store.log(job_id).follow_lines(after=after, follow=follow, ranges=True)

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
        live.note.cell = req.script is not None
        live.local = local
        spec = jobspec.standard_spec(record, req, runtime, self.config.uid_base + live.uid_slot,
                                     self.paths.jobs / record.id, self.store.artifacts(record.id),
                                     self._cgroup_limits(record.limits), self._refuse_tcp, base)
        assert live.budget is not None
        spec.work_files, spec.work_bytes = live.budget.files, live.budget.bytes
        self._launch(live, spec, self.store.dir(record.id), runtime, base, soon=True)
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
                             sink: SandboxSink, folder: Path, files: list[WorkFile], output: str,
                             output_options: dict[str, Any]) -> LiveJob:
        """A production sandbox that is not a job: no record, nothing under /v1/jobs. Its events
        go to `sink` (its log lives in `folder`, its output becomes events through the `output`
        translator), its input to that translator (`input`); `files` join its uploads. A session's
        sandbox: the same spec, limits, runtime, network and executor as a job's."""
        limits = self._checked_limits(who, req, self.cluster is None)
        base, runtime = await self._system(runtime)
        record = JobRecord(id=sandbox_id, type=JobType.STANDARD, owner=who.id, runtime=req.runtime,
                           limits=limits, network=req.network, command=req.command, created_at=time.time())
        live = self._admit(record, stored=False)
        live.sink = sink
        sink.bind(live)
        live.local = self.cluster is None
        spec = jobspec.standard_spec(record, req, runtime, self.config.uid_base + live.uid_slot,
                                     self.paths.jobs / record.id, None, self._cgroup_limits(record.limits),
                                     self._refuse_tcp, base)
        spec.uploads += files
        spec.stdin_pipe, spec.output, spec.output_options = True, output, output_options
        self._launch(live, spec, folder, runtime, base)
        return live

    def input(self, live: LiveJob, data: str) -> None:
        """Input for an attached sandbox's output translator (a session's requests), which decides
        when it goes to the program's stdin; never blocking the agent (bounded buffers; a sandbox
        that does not read is stopped)."""
        if live.execution is None:
            raise BrokenPipeError("the sandbox's input is closed")
        if live.translator is None:
            live.execution.write_input(data.encode())  # its holder translates
        else:
            self.take(live, live.translator.input(data))

    def take(self, live: LiveJob, step: Step) -> None:
        """What the agent's own translator made: events into the sink's log, bytes for the
        program's stdin, notices for the sink."""
        assert live.sink is not None
        for event in step.events:
            live.sink.log.append(event)
        if step.stdin and live.execution is not None:
            live.execution.write_input(step.stdin)
        for notice in step.notices:
            live.sink.notice(notice)

    def signal(self, live: LiveJob, sig: int) -> None:
        """A signal for the sandbox's program (its init forwards it to the program's process group)."""
        if live.execution is not None and not live.done.is_set():
            live.execution.signal(sig)

    def end(self, live: LiveJob, reason: str = "stopped") -> None:
        """End an attached sandbox at once (SIGKILL); its sink hears how it ended."""
        self.signal_stop(live, reason, grace=0)

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
            self._launch(live, spec, self.store.dir(record.id))
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
        note = LaunchNote(token=secrets.token_hex(16), uid_slot=slot, outputs=outputs or [])
        live = LiveJob(record=record, note=note)
        live.sink = JobLog(self, live) if stored else None
        live.budget = budget
        note.work_files, note.work_bytes = budget.files, budget.bytes  # an adopting agent's too
        return live

    def _cgroup_limits(self, limits: JobLimits) -> cgroups.CgroupLimits:
        return cgroups.CgroupLimits(
            cpu_percent=limits.cpu_percent, memory_mb=limits.memory_mb,
            pids=(limits.pids + SANDBOX_OVERHEAD_PIDS) if limits.pids else None,
            io_bps=limits.io_bps or None, io_device=self.io_device if limits.io_bps else None)

    def _launch(self, live: LiveJob, spec: SandboxSpec, folder: Path, runtime: RuntimeMounts | None = None,
                base: RuntimeMounts | None = None, soon: bool = False) -> None:
        """Hand the spec to the job's executor; from here on its sandbox reports to `SandboxEars`.
        On this host the sandbox's holder writes its log in `folder` and enforces its timeout;
        through Slurm the agent translates its output and times it. `soon`: on this host, handed
        over once the event loop's turn ends (a job's POST is answered first)."""
        self.live[live.record.id] = live
        ears = SandboxEars(self, live)
        spec.timeout_s, spec.max_output_bytes = live.record.limits.timeout_s, self.config.max_output_mb << 20
        if live.local:
            keep = self._note_keeper(live.record, live.note) if isinstance(live.sink, JobLog) else None
            live.execution = self.local.start(spec, ears, folder, live.note, keep, soon=soon)
        else:
            assert self.cluster is not None
            live.translator = translator_for(spec)
            live.execution = self.cluster.start(spec, live.record.limits, runtime, ears,
                                                self.paths.state / "slurm" / live.record.id, base)

    def _note_keeper(self, record: JobRecord, note: LaunchNote) -> Callable[[bool], None]:
        """A job's launch note is saved in its record file (jobstore.py), not in a file of its own."""
        return lambda fresh: self.store.keep_note(record, note)

    def adopt(self, record: JobRecord, note: LaunchNote, checked: Checked, sink: SandboxSink | None = None,
              folder: Path | None = None) -> LiveJob:
        """A sandbox an earlier life of the agent left running on this host (restore.py checked its
        holder): live again, with its uid slot; a job's (no `sink`), or a session's."""
        self._slots.add(note.uid_slot)
        live = LiveJob(record=record, note=note, budget=KeptWork(files=note.work_files, bytes=note.work_bytes))
        live.sink = sink or JobLog(self, live)
        if sink is not None:
            sink.bind(live)
        self.live[record.id] = live
        keep = None
        if sink is None:  # a job's: its note is saved with its record from now on (launch.json or not)
            self.store.notes[record.id] = note
            keep = self._note_keeper(record, note)
        live.execution = self.local.adopt(record.id, record.network, folder or self.store.dir(record.id), note,
                                          checked, SandboxEars(self, live), keep)
        return live

    def resume(self) -> None:
        """On the event loop, once at start: the adopted holders' links, from their checked hello on,
        and the spare job folders."""
        for live in self.live.values():
            if isinstance(live.execution, LocalExecution) and live.execution.adopted and live.execution.link is None:
                live.execution.resume()
        if self.store.spares is not None:
            self.store.spares.prime()

    async def stop(self, who: Principal, job_id: str, reason: str = "stopped") -> JobRecord:
        record = self.get(who, job_id)
        live = self.live.get(job_id)
        if live is not None:
            self.audit.write("stop", job=job_id, by=who.id, role=who.role)
            self.signal_stop(live, reason)
        else:
            await self.cleanups.wait(job_id)  # it has ended: what it held is gone when this returns
        return record

    async def wait(self, job_id: str) -> JobRecord | None:
        """The job's record once its sandbox is gone (None if it was deleted meanwhile)."""
        live = self.live.get(job_id)
        if live is not None:
            await live.done.wait()
        return self.store.get(job_id)

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
        thread, so that the event loop serves others meanwhile. What its sandbox held goes first."""
        await self.cleanups.wait(job_id)
        folder = self.store.forget(job_id)
        await asyncio.to_thread(remove_tree, str(folder))

    async def shutdown(self, stop_jobs: bool = True) -> dict[str, str]:
        """The agent stops. Sandboxes whose holders outlive it (this host's) are left running for
        the next agent unless `stop_jobs`; the others (a Slurm job's) are stopped and waited for.
        Returns the ids left running, with their network mode."""
        left: dict[str, str] = {}
        if self.store.spares is not None:
            await self.store.spares.close()
        for live in list(self.live.values()):
            if not stop_jobs and live.execution is not None and live.execution.holds_log:
                await live.execution.detach()
                left[live.record.id] = live.record.network
                self.live.pop(live.record.id, None)
            else:
                self.signal_stop(live, "stopped", grace=0.5)
        for live in list(self.live.values()):
            try:
                await asyncio.wait_for(live.done.wait(), timeout=15)
            except asyncio.TimeoutError:
                if live.execution is not None:
                    live.execution.kill()
        await self.cleanups.wait_all(timeout=15)
        self.store.save_pending()
        return left

    # ---- uid slots -----------------------------------------------------------------------

    def release_slot(self, live: LiveJob) -> None:
        self._slots.discard(live.note.uid_slot)

    def _take_slot(self) -> int:
        for _ in range(1000):
            slot = secrets.randbelow(self.config.uid_slots)
            if slot not in self._slots:
                self._slots.add(slot)
                return slot
        raise Conflict("no free job uid: too many jobs are running")

    def signal_stop(self, live: LiveJob, reason: str, grace: float | None = None) -> None:
        if live.record.status.finished:
            return
        if live.stop_reason is None:
            live.stop_reason = reason
        if live.execution is not None:
            live.execution.stop(grace, reason)

    # ---- the end of a job ----------------------------------------------------------------

    def finish_record(self, record: JobRecord, verdict: Verdict) -> None:
        self.store.finish(record, verdict)
        self.audit.write("end", job=record.id, owner=record.owner, status=verdict.status.value,
                         reason=verdict.reason, exit_code=verdict.exit_code, signal=verdict.signal,
                         cpu_s=record.usage.cpu_s, memory_peak_bytes=record.usage.memory_peak_bytes)


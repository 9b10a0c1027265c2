"""SessionService: long-lived production sandboxes whose Python keeps its variables between cells.

A session's sandbox is a job's sandbox (the JobService starts it through the same spec, launcher,
limits, runtimes and network modes), whose program is the session runner, written into its
/work/.joblet (install.py) and run by the sandbox's own python3. Like a job's, it is held by a holder
that outlives the agent (sandbox/holder.py): the holder writes the session's log through the `session`
translator (frames.py), which queues the cells and gives them to the runner one at a time (so an
interrupt reaches the running cell only), and tells this service when the runner is ready and when a
cell starts and ends. A restarted agent takes its sessions back (`load`): their variables are still
there. The service knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import frames, protocol
from ..audit import AuditLog
from ..auth import Principal
from ..config import AgentConfig
from ..contract import JobType
from ..errors import BadRequest, Conflict, NotFound, SessionEnded
from ..eventfile import EventFile
from ..jobs.restore import SLURM_LOST, Adopted, RestoreReport, take_back
from ..jobs.livejob import LiveJob
from ..jobs.service import JobService
from ..jobs.loglines import LogRange
from ..jobs.store import EventLog
from ..jobs.verdict import Verdict, exec_note
from ..models import JobRecord, JobRequest, Usage
from ..sandbox.outcome import Outcome
from .install import BOOT, runner_files
from .models import CellRequest, CompleteRequest, SessionRecord, SessionRequest, SessionStatus
from .store import SessionStore

COMPLETE_TIMEOUT_S = 5.0


@dataclass
class LiveSession:
    """What the service keeps about a session while its sandbox exists."""

    record: SessionRecord
    sandbox: LiveJob | None = None
    queued: int = 0                   # cells handed to the holder that the runner has not begun
    running: int | None = None        # the cell the runner has now
    end_reason: str | None = None     # why the agent ends it (deleted, idle)
    idle: asyncio.TimerHandle | None = None
    completions: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class SessionService:
    def __init__(self, jobs: JobService, config: AgentConfig, state: Path, audit: AuditLog) -> None:
        self.jobs = jobs
        self.config = config
        self.audit = audit
        self.store = SessionStore(state / "sessions")
        self.runner = runner_files()      # written into every session's /work/.joblet
        self.live: dict[str, LiveSession] = {}
        self._completion_ids = 0
        jobs.quota.sessions_open = self._open_sessions   # a hub user's `sessions` quota counts these

    def _open_sessions(self, owner: str) -> int:
        return sum(1 for live in self.live.values() if live.record.owner == owner)

    def load(self) -> RestoreReport:
        """At start: the sessions an earlier life of the agent left. One whose holder lives is
        adopted (its variables are still there); one that ended meanwhile ends with its reason,
        `lost` when nothing was recorded; one that ended longer than `sessions.keep_ended_s` ago
        is forgotten."""
        report = RestoreReport()
        oldest = time.time() - self.config.sessions.keep_ended_s
        for record in self.store.load():
            if record.status == SessionStatus.ENDED:
                if (record.ended_at or 0) < oldest:
                    self.store.remove(record.id)
                continue
            folder = self.store.dir(record.id)
            taken = take_back(self.jobs.driver, folder, record.id)
            if isinstance(taken, Adopted):
                live = self.live[record.id] = LiveSession(record=record)
                live.sandbox = self.jobs.adopt(_as_sandbox(record), taken.note, taken.checked,
                                               _Sink(self, record.id, self.store.log(record.id)), folder)
                report.adopted.append(record.id)
                continue
            why = taken.why_lost(folder)
            if taken.note is None and taken.problem is None and self.jobs.cluster is not None:
                why = SLURM_LOST  # a session placed through Slurm: its srun went with the agent
                self.jobs.cluster.cancel_left(record.id, None)
            try:
                self._end_while_away(record, taken.log, taken.outcome, why)
            finally:
                taken.log.close()
            report.ended.append(record.id)
        return report

    def _end_while_away(self, record: SessionRecord, log: EventFile, outcome: Outcome | None, why: str) -> None:
        if log.ended:
            record.status, record.reason = SessionStatus.ENDED, (log.last or {}).get("reason", "lost")
            self.store.save(record)
            return
        reason = frames.session_reason(outcome)
        message = None if outcome else why
        if outcome and outcome.cpu_s is not None:
            record.usage = Usage(cpu_s=outcome.cpu_s, memory_peak_bytes=outcome.memory_peak_bytes)
        log.append([_exit_event(reason, message)])
        self._settle(record, reason, message)

    # ---- queries ---------------------------------------------------------------------------

    def list_sessions(self, who: Principal) -> list[SessionRecord]:
        return self.store.visible_to(who)

    def get(self, who: Principal, session_id: str) -> SessionRecord:
        """The record, with the usage of a live session's sandbox so far (its cgroup read)."""
        record = self._record(who, session_id)
        live = self.live.get(session_id)
        if live is not None and live.sandbox is not None:
            record.usage = self.jobs.usage_of(live.sandbox)
        return record

    def _record(self, who: Principal, session_id: str) -> SessionRecord:
        """The caller's record or a 404, without its usage: a cell, an interrupt or a completion
        does not read the sandbox's cgroup (a few file reads on a warm cell's path)."""
        record = self.store.get_for(who, session_id)
        if record is None:
            raise NotFound(f"no session {session_id!r} (list yours with GET /v1/sessions)")
        return record

    async def events(self, who: Principal, session_id: str, after: int, follow: bool) -> AsyncIterator[dict[str, Any]]:
        self._record(who, session_id)
        return self.store.log(session_id).follow(after=after, follow=follow)

    async def event_lines(self, who: Principal, session_id: str, after: int,
                          follow: bool) -> AsyncIterator[memoryview | LogRange]:
        """`events` as NDJSON bytes straight from the log (what the HTTP stream sends)."""
        self._record(who, session_id)
        return self.store.log(session_id).follow_lines(after=after, follow=follow, ranges=True)

    # ---- commands --------------------------------------------------------------------------

    async def start(self, who: Principal, req: SessionRequest) -> SessionRecord:
        runtime = self.jobs.resolve_runtime(req.runtime) if req.runtime else None
        if runtime is not None and runtime.script_suffix != ".py":
            raise BadRequest(f"runtime {req.runtime!r} is not a Python runtime: sessions run Python")
        idle = self._idle_timeout(req.idle_timeout_s)
        self.jobs.quota.admit_session(who)
        mine = self._open_sessions(who.id)
        if mine >= self.config.sessions.max_per_user:
            raise Conflict(f"you have {mine} sessions, the most this agent allows (sessions.max_per_user); "
                           f"end one with DELETE /v1/sessions/ID")
        python = runtime.script_command[0] if runtime else "python3"
        job_req = JobRequest(command=[python, "-c", BOOT], runtime=req.runtime, env=req.env,
                             limits=req.limits, network=req.network, uploads=req.uploads)
        now = time.time()
        record = SessionRecord(id=secrets.token_hex(8), owner=who.id, runtime=req.runtime, network=req.network,
                               idle_timeout_s=idle, created_at=now, last_active_at=now)
        self.store.add(record)  # its folder holds the session's log, which the sandbox's holder writes
        live = LiveSession(record=record)
        self.live[record.id] = live
        try:
            live.sandbox = await self.jobs.start_attached(
                who, record.id, job_req, runtime, _Sink(self, record.id, self.store.log(record.id)),
                self.store.dir(record.id), self.runner, frames.NAME,
                {"max_outputs_bytes": self.config.max_outputs_bytes, "max_output_mb": self.config.max_output_mb})
        except BaseException:
            self.live.pop(record.id, None)
            self.store.remove(record.id)
            raise
        record.limits = live.sandbox.record.limits
        self.store.save(record)
        self.audit.write("session-start", session=record.id, owner=who.id, runtime=record.runtime,
                         limits=record.limits.model_dump(exclude_none=True), network=record.network)
        if record.id in self.live:
            self._arm_idle(live)
        return record

    def _idle_timeout(self, asked: float | None) -> float:
        cfg = self.config.sessions
        if asked is not None and asked > cfg.max_idle_timeout_s:
            raise BadRequest(f"idle_timeout_s: {asked:g} is above this agent's maximum of "
                             f"{cfg.max_idle_timeout_s:g} (sessions.max_idle_timeout_s in its config)")
        return asked if asked is not None else cfg.idle_timeout_s

    def submit(self, who: Principal, session_id: str, cell: CellRequest) -> int:
        record = self._record(who, session_id)
        live = self.live.get(session_id)
        if live is None or live.sandbox is None or record.status == SessionStatus.ENDED:
            raise SessionEnded(f"session {session_id} has ended (reason {record.reason}"
                           + (f": {record.message}" if record.message else "")
                           + "); start a new one (POST /v1/sessions, or `%joblet session start`)")
        waiting = live.queued if live.running is not None else max(0, live.queued - 1)  # one goes at once
        if waiting >= self.config.sessions.max_queued_cells:
            raise Conflict(f"session {session_id} already has {waiting} cells waiting")
        record.cells += 1
        record.last_active_at = time.time()
        self.store.save_soon(record)  # off the cell's path: a restarted agent asks the holder too
        live.queued += 1
        if record.status == SessionStatus.READY:
            record.status = SessionStatus.BUSY
        self._cancel_idle(live)
        try:
            self.jobs.input(live.sandbox, protocol.execute_request(
                record.cells, cell.code, cell.inputs, cell.outputs).decode())
        except OSError:
            pass  # the runner is gone: its end (the sandbox's) says why
        return record.cells

    def interrupt(self, who: Principal, session_id: str) -> None:
        self._record(who, session_id)
        live = self.live.get(session_id)
        if live is not None and live.running is not None and live.sandbox is not None:
            self.jobs.signal(live.sandbox, signal.SIGINT)

    async def complete(self, who: Principal, session_id: str, req: CompleteRequest) -> dict[str, Any]:
        """Names from the session's namespace, answered between cells (an empty list while one runs)."""
        self._record(who, session_id)
        pos = min(req.cursor_pos, len(req.code))
        empty = {"matches": [], "cursor_start": pos, "cursor_end": pos}
        live = self.live.get(session_id)
        if live is None or live.running is not None or live.queued or live.sandbox is None:
            return empty
        self._completion_ids += 1
        request_id = self._completion_ids
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        live.completions[request_id] = future
        try:
            self.jobs.input(live.sandbox, protocol.complete_request(request_id, req.code, pos).decode())
            answer = await asyncio.wait_for(future, COMPLETE_TIMEOUT_S)
        except (asyncio.TimeoutError, OSError):
            return empty
        finally:
            live.completions.pop(request_id, None)
        start = max(0, min(answer["cursor_start"], pos))
        return {"matches": answer["matches"], "cursor_start": start, "cursor_end": pos}

    async def delete(self, who: Principal, session_id: str) -> None:
        """End a session (its record says so afterwards); a session that has already ended is
        forgotten: its record and event log go."""
        record = self._record(who, session_id)
        self.audit.write("session-delete", session=session_id, by=who.id, role=who.role)
        live = self.live.get(session_id)
        if live is not None:
            self._end(live, "deleted")
            await live.ended.wait()
        elif record.status == SessionStatus.ENDED:
            self.store.remove(session_id)

    async def shutdown(self, stop: bool) -> None:
        """The agent stops. Its sessions on this host stay with their holders for the next agent,
        unless it stops its jobs too (`--stop-jobs`): then they end (reason lost), as do sessions
        placed through Slurm (their srun goes with the agent)."""
        ending = []
        for live in list(self.live.values()):
            self._cancel_idle(live)
            execution = live.sandbox.execution if live.sandbox is not None else None
            if stop or execution is None or not execution.holds_log:
                ending.append(live)
                self._end(live, "lost")
            else:
                self.live.pop(live.record.id, None)  # the JobService detaches its holder
        for live in ending:
            await live.ended.wait()
        self.store.save_pending()

    # ---- what the session's sandbox tells (through _Sink) ----------------------------------

    def _taken_over(self, live: LiveSession, state: dict[str, Any]) -> None:
        """An adopted holder's translator says where its runner is, and the last cell it was
        given (the record on disk may be a cell behind: it is saved off the cell's path)."""
        live.running = state.get("running") if isinstance(state.get("running"), int) else None
        queued = [c for c in state.get("queued") or [] if isinstance(c, int)]
        live.queued = len(queued)
        given = [c for c in (state.get("last_cell"), live.running, *queued) if isinstance(c, int)]
        live.record.cells = max([live.record.cells, *given])
        busy = live.running is not None or live.queued
        live.record.status = (SessionStatus.BUSY if busy else SessionStatus.READY if state.get("ready")
                              else SessionStatus.STARTING)
        if not busy:
            self._arm_idle(live)

    def notice(self, session_id: str, data: Any) -> None:
        live = self.live.get(session_id)
        if live is None or not isinstance(data, dict):
            return
        record = live.record
        if isinstance(data.get("state"), dict):
            self._taken_over(live, data["state"])
        elif data.get("ready") and record.status == SessionStatus.STARTING:
            record.status = SessionStatus.BUSY if live.running is not None or live.queued else SessionStatus.READY
        elif isinstance(data.get("cell_started"), int):
            live.running, live.queued = data["cell_started"], max(0, live.queued - 1)
            record.status = SessionStatus.BUSY
        elif isinstance(data.get("cell_done"), int):
            live.running = None
            record.last_active_at = time.time()
            record.status = SessionStatus.BUSY if live.queued else SessionStatus.READY
            if not live.queued:
                self._arm_idle(live)
        elif isinstance(data.get("completion"), dict):
            future = live.completions.get(data["completion"].get("id"))
            if future is not None and not future.done():
                future.set_result(data["completion"])

    def ended(self, sandbox: LiveJob, verdict: Verdict) -> None:
        """The sandbox is gone (cgroup, mounts, folders, network): the session ends with a reason.
        Its translator has already ended a cell that was running, saying why."""
        live = self.live.pop(sandbox.record.id, None)
        if live is None:
            return
        self._cancel_idle(live)
        reason = live.end_reason or _reason(sandbox.stop_reason, verdict)
        message = verdict.message if reason in ("exit", "oom", "timeout", "lost") else None
        for future in live.completions.values():
            if not future.done():
                future.set_result({"matches": [], "cursor_start": 0, "cursor_end": 0})
        live.record.usage = sandbox.record.usage
        log = self.store.log(live.record.id)
        for note in exec_note(sandbox.outcome):  # the runner could not be started
            log.append({"cell": live.running or 0, **note})
        log.append(_exit_event(reason, message))
        self._settle(live.record, reason, message)
        live.ended.set()

    # ---- the end ---------------------------------------------------------------------------

    def _arm_idle(self, live: LiveSession) -> None:
        self._cancel_idle(live)
        live.idle = asyncio.get_running_loop().call_later(live.record.idle_timeout_s, self._end, live, "idle")

    def _cancel_idle(self, live: LiveSession) -> None:
        if live.idle is not None:
            live.idle.cancel()
            live.idle = None

    def _end(self, live: LiveSession, reason: str) -> None:
        if live.end_reason is None:
            live.end_reason = reason
        if live.sandbox is not None:
            self.jobs.end(live.sandbox, reason)

    def _settle(self, record: SessionRecord, reason: str, message: str | None) -> None:
        record.status, record.reason, record.message = SessionStatus.ENDED, reason, message
        record.ended_at = time.time()
        self.store.save(record)
        self.audit.write("session-end", session=record.id, owner=record.owner, reason=reason, cells=record.cells)


def _exit_event(reason: str, message: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "exit", "status": "ENDED", "reason": reason}
    if message:
        event["message"] = message
    return event


def _as_sandbox(record: SessionRecord) -> JobRecord:
    """A session's sandbox described as the sandboxes describe theirs."""
    return JobRecord(id=record.id, type=JobType.STANDARD, owner=record.owner, runtime=record.runtime,
                     limits=record.limits, network=record.network, created_at=record.created_at)


def _reason(stop_reason: str | None, verdict: Verdict) -> str:
    """Why a session's sandbox ended, in the session's words (API.md: deleted, idle, oom, timeout,
    exit, lost): the agent's reason for ending it (kept by its holder across a restart), else the
    kernel's, else the runner's own exit."""
    if stop_reason in ("deleted", "idle", "lost", "timeout"):
        return stop_reason
    return verdict.reason if verdict.reason in ("oom", "timeout", "lost") else "exit"


class _Sink:
    """The JobService's side of a session's sandbox (jobs.sinks.SandboxSink): the session's log,
    which its holder (or, through Slurm, the agent's translator) writes; notices and its end."""

    def __init__(self, service: SessionService, session_id: str, log: EventLog) -> None:
        self.service, self.session_id, self.log = service, session_id, log
        self.sandbox: LiveJob | None = None

    def bind(self, live: LiveJob) -> None:
        self.sandbox = live

    def running(self) -> None:
        pass  # READY comes with the runner's first frame

    def note(self, text: str) -> None:
        live = self.service.live.get(self.session_id)
        self.log.append({"cell": (live.running if live else None) or 0, "type": "stderr", "data": text})

    def notice(self, data: Any) -> None:
        self.service.notice(self.session_id, data)

    def ended(self, verdict: Verdict) -> None:
        assert self.sandbox is not None
        self.service.ended(self.sandbox, verdict)

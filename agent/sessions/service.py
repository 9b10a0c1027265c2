"""SessionService: long-lived production sandboxes whose Python keeps its variables between cells.

A session's sandbox is a job's sandbox (the JobService starts it through the same spec, launcher,
limits, runtimes and network modes), whose program is the session runner, bound read-only into it
and run by the sandbox's own python3, and whose stdin is a pipe the agent writes cell requests to.
Its stdout carries the runner's frames, which `protocol.translate` turns into the session's events.
Cells queue here and go to the runner one at a time, so an interrupt reaches the running cell only.
The service knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import protocol
from ..audit import AuditLog
from ..auth import Principal
from ..config import AgentConfig
from ..errors import BadRequest, Conflict, NotFound, SessionEnded
from ..jobs.livejob import LiveJob
from ..jobs.service import JobService
from ..jobs.verdict import Verdict
from ..models import JobRequest
from ..sandbox.spec import Mount
from .install import BOOT, IN_SANDBOX, install_runner
from .models import CellRequest, CompleteRequest, SessionRecord, SessionRequest, SessionStatus
from .store import SessionStore

COMPLETE_TIMEOUT_S = 5.0


@dataclass
class LiveSession:
    """What the service keeps about a session while its sandbox exists."""

    record: SessionRecord
    sandbox: LiveJob | None = None
    splitter: protocol.FrameSplitter = field(default_factory=protocol.FrameSplitter)
    queue: collections.deque[tuple[int, CellRequest]] = field(default_factory=collections.deque)
    running: int | None = None        # the cell the runner has now
    last_cell: int = 0                # the cell output between cells belongs to
    end_reason: str | None = None     # why the agent ends it (deleted, idle)
    cell_bytes: int = 0               # output of the running cell kept so far
    cut: bool = False                 # its output went over max_output_mb
    idle: asyncio.TimerHandle | None = None
    completions: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class SessionService:
    def __init__(self, jobs: JobService, config: AgentConfig, state: Path, audit: AuditLog) -> None:
        self.jobs = jobs
        self.config = config
        self.audit = audit
        self.store = SessionStore(state / "sessions")
        self.runner_dir = install_runner(state / "session-runner")
        self.live: dict[str, LiveSession] = {}
        self._completion_ids = 0
        jobs.quota.sessions_open = self._open_sessions   # a hub user's `sessions` quota counts these

    def _open_sessions(self, owner: str) -> int:
        return sum(1 for live in self.live.values() if live.record.owner == owner)

    def load(self) -> None:
        """At start: sessions of an earlier life of the agent ended with it (reason lost); those
        that ended longer than `sessions.keep_ended_s` ago are forgotten."""
        oldest = time.time() - self.config.sessions.keep_ended_s
        for record in self.store.load():
            if record.status != SessionStatus.ENDED:
                self._finish(record, "lost", "the agent restarted while the session ran")
            elif (record.ended_at or 0) < oldest:
                self.store.remove(record.id)

    # ---- queries ---------------------------------------------------------------------------

    def list_sessions(self, who: Principal) -> list[SessionRecord]:
        return self.store.visible_to(who)

    def get(self, who: Principal, session_id: str) -> SessionRecord:
        record = self.store.get_for(who, session_id)
        if record is None:
            raise NotFound(f"no session {session_id!r} (list yours with GET /v1/sessions)")
        live = self.live.get(session_id)
        if live is not None and live.sandbox is not None:
            record.usage = self.jobs.usage_of(live.sandbox)
        return record

    async def events(self, who: Principal, session_id: str, after: int, follow: bool) -> AsyncIterator[dict[str, Any]]:
        self.get(who, session_id)
        return self.store.log(session_id).follow(after=after, follow=follow)

    async def event_lines(self, who: Principal, session_id: str, after: int, follow: bool) -> AsyncIterator[bytes]:
        """`events` as NDJSON bytes straight from the log (what the HTTP stream sends)."""
        self.get(who, session_id)
        return self.store.log(session_id).follow_lines(after=after, follow=follow)

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
        live = LiveSession(record=record)
        sink = _Sink(self, live)
        live.sandbox = await self.jobs.start_attached(
            who, record.id, job_req, runtime, sink, [Mount(str(self.runner_dir), IN_SANDBOX, readonly=True)])
        record.limits = live.sandbox.record.limits
        self.store.add(record)
        self.audit.write("session-start", session=record.id, owner=who.id, runtime=record.runtime,
                         limits=record.limits.model_dump(exclude_none=True), network=record.network)
        if sink.verdict is not None:          # the sandbox could not even be made
            self.on_sandbox_end(live, sink.verdict)
        else:
            self.live[record.id] = live
            self._arm_idle(live)
        return record

    def _idle_timeout(self, asked: float | None) -> float:
        cfg = self.config.sessions
        if asked is not None and asked > cfg.max_idle_timeout_s:
            raise BadRequest(f"idle_timeout_s: {asked:g} is above this agent's maximum of "
                             f"{cfg.max_idle_timeout_s:g} (sessions.max_idle_timeout_s in its config)")
        return asked if asked is not None else cfg.idle_timeout_s

    def submit(self, who: Principal, session_id: str, cell: CellRequest) -> int:
        record = self.get(who, session_id)
        live = self.live.get(session_id)
        if live is None or record.status == SessionStatus.ENDED:
            raise SessionEnded(f"session {session_id} has ended (reason {record.reason}"
                           + (f": {record.message}" if record.message else "")
                           + "); start a new one (POST /v1/sessions, or `%joblet session start`)")
        if len(live.queue) >= self.config.sessions.max_queued_cells:
            raise Conflict(f"session {session_id} already has {len(live.queue)} cells waiting")
        record.cells += 1
        record.last_active_at = time.time()
        live.queue.append((record.cells, cell))
        self._cancel_idle(live)
        self._next_cell(live)
        return record.cells

    def interrupt(self, who: Principal, session_id: str) -> None:
        self.get(who, session_id)
        live = self.live.get(session_id)
        if live is not None and live.running is not None and live.sandbox is not None:
            self.jobs.signal(live.sandbox, signal.SIGINT)

    async def complete(self, who: Principal, session_id: str, req: CompleteRequest) -> dict[str, Any]:
        """Names from the session's namespace, answered between cells (an empty list while one runs)."""
        self.get(who, session_id)
        pos = min(req.cursor_pos, len(req.code))
        empty = {"matches": [], "cursor_start": pos, "cursor_end": pos}
        live = self.live.get(session_id)
        if live is None or live.running is not None or live.queue or live.sandbox is None:
            return empty
        self._completion_ids += 1
        request_id = self._completion_ids
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        live.completions[request_id] = future
        try:
            self.jobs.write_stdin(live.sandbox, protocol.complete_request(request_id, req.code, pos))
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
        record = self.get(who, session_id)
        self.audit.write("session-delete", session=session_id, by=who.id, role=who.role)
        live = self.live.get(session_id)
        if live is not None:
            self._end(live, "deleted")
            await live.ended.wait()
        elif record.status == SessionStatus.ENDED:
            self.store.remove(session_id)

    async def shutdown(self) -> None:
        """The agent stops: its sessions end with it (reason lost, as after a crash)."""
        for live in list(self.live.values()):
            self._end(live, "lost")
        for live in list(self.live.values()):
            await live.ended.wait()

    # ---- the runner's side -------------------------------------------------------------------

    def _next_cell(self, live: LiveSession) -> None:
        if live.running is not None or not live.queue or live.sandbox is None:
            return
        cell, req = live.queue.popleft()
        live.running = live.last_cell = cell
        live.record.status = SessionStatus.BUSY
        try:
            self.jobs.write_stdin(live.sandbox, protocol.execute_request(cell, req.code, req.inputs, req.outputs))
        except OSError:
            pass  # the runner is gone: its end (the sandbox's) says why

    def on_frames(self, live: LiveSession, data: bytes) -> None:
        log = self.store.log(live.record.id)
        for frame in live.splitter.feed(data):
            cell = live.running if live.running is not None else live.last_cell
            out = protocol.translate(frame, cell, self.config.max_outputs_bytes)
            for event in out.events:
                if self._keep(live, event):
                    log.append(event)
            if out.ready and live.record.status == SessionStatus.STARTING:
                live.record.status = SessionStatus.READY if live.running is None else SessionStatus.BUSY
            if out.completion is not None:
                future = live.completions.get(out.completion.get("id"))
                if future is not None and not future.done():
                    future.set_result(out.completion)
            if out.cell_done is not None and live.running is not None:
                self._cell_done(live)

    def _keep(self, live: LiveSession, event: dict[str, Any]) -> bool:
        """A cell's output is kept up to `max_output_mb`, as a job's is; the rest is dropped with
        a note (the runner is still read, so it never blocks)."""
        if event["type"] == "cell_start":
            live.cell_bytes, live.cut = 0, False
        if event["type"] not in ("stdout", "stderr", "display", "result"):
            return True
        data = event["data"]
        live.cell_bytes += len(data) if isinstance(data, str) else sum(len(v) for v in data.values())
        if live.cell_bytes <= self.config.max_output_mb << 20:
            return True
        if not live.cut:
            live.cut = True
            self.store.log(live.record.id).append({"cell": event["cell"], "type": "stderr", "data":
                                                   f"[joblet] output beyond {self.config.max_output_mb} MB "
                                                   f"of this cell is not kept\n"})
        return False

    def _cell_done(self, live: LiveSession) -> None:
        live.running = None
        live.record.last_active_at = time.time()
        live.record.status = SessionStatus.READY
        if live.queue:
            self._next_cell(live)
        else:
            self._arm_idle(live)

    def on_stderr(self, live: LiveSession, text: str) -> None:
        """The runner's own stderr (a crash of the interpreter, not a cell's output)."""
        cell = live.running if live.running is not None else live.last_cell
        self.store.log(live.record.id).append({"cell": cell, "type": "stderr", "data": text})

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
            self.jobs.end(live.sandbox)

    def on_sandbox_end(self, live: LiveSession, verdict: Verdict) -> None:
        """The sandbox is gone (cgroup, mounts, folders, network): the session ends with a reason."""
        self._cancel_idle(live)
        reason = live.end_reason or _reason_of(verdict)
        message = verdict.message if reason in ("exit", "oom", "timeout") else None
        log = self.store.log(live.record.id)
        if live.running is not None:
            log.append({"cell": live.running, "type": "error", "ename": "SessionEnded",
                        "evalue": f"the session ended while this cell ran (reason {reason})", "traceback": []})
            log.append({"cell": live.running, "type": "cell_end", "status": "error"})
        for future in live.completions.values():
            if not future.done():
                future.set_result({"matches": [], "cursor_start": 0, "cursor_end": 0})
        if live.sandbox is not None:
            live.record.usage = live.sandbox.record.usage
        self._finish(live.record, reason, message)
        self.live.pop(live.record.id, None)
        live.ended.set()

    def _finish(self, record: SessionRecord, reason: str, message: str | None) -> None:
        record.status, record.reason, record.message, record.ended_at = SessionStatus.ENDED, reason, message, time.time()
        self.store.save(record)
        event: dict[str, Any] = {"type": "exit", "status": "ENDED", "reason": reason}
        if message:
            event["message"] = message
        self.store.log(record.id).append(event)
        self.audit.write("session-end", session=record.id, owner=record.owner, reason=reason, cells=record.cells)


def _reason_of(verdict: Verdict) -> str:
    """How a sandbox the agent did not end itself ended, in the session's words."""
    return verdict.reason if verdict.reason in ("oom", "timeout") else "exit"


class _Sink:
    """The JobService's side of a session's sandbox: its stdout is the runner's frames, its stderr
    the interpreter's own complaints (a crash), its end the session's."""

    def __init__(self, service: SessionService, live: LiveSession) -> None:
        self.service, self.live = service, live
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.verdict: Verdict | None = None

    def output(self, kind: str, data: bytes) -> None:
        if kind == "stdout":
            self.service.on_frames(self.live, data)
        else:
            text = self.decoder.decode(data, final=not data)
            if text:
                self.service.on_stderr(self.live, text)

    def running(self) -> None:
        pass  # READY comes with the runner's first frame

    def note(self, text: str) -> None:
        self.service.on_stderr(self.live, text)

    def ended(self, verdict: Verdict) -> None:
        if self.live.record.id not in self.service.live:
            self.verdict = verdict    # during start(): it finishes the record itself
        else:
            self.service.on_sandbox_end(self.live, verdict)

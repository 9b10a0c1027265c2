"""What an executor tells the JobService about one job's sandbox (cluster.executor.JobEvents),
turned into the job's record, its sink (log or session) and its end.

Where the sandbox has a holder (this host's executor), the holder has written the log already:
the ears wake its followers (`logged`) and keep the record. Where it has none (a Slurm job), the
agent's own translator turns the output into events here, and the agent times the job.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..cluster.executor import Ending, Placement
from ..contract import JobStatus
from ..models import ClusterRef, KeptWork, Usage
from ..sandbox import status
from ..sandbox.output import Step
from .livejob import Keeper, LiveJob
from .verdict import Verdict, decide


class SandboxEars:
    def __init__(self, service: Keeper, live: LiveJob) -> None:
        self.service, self.live = service, live

    @property
    def stored(self) -> bool:
        """A job's record is kept (and shown); a session's sandbox has none of its own."""
        return self.service.store.records.get(self.live.record.id) is self.live.record

    def output(self, stream: str, data: bytes) -> None:
        """Output of a sandbox without a holder: the agent's translator makes the events."""
        if self.live.translator is not None:
            self.service.take(self.live, self.live.translator.output(stream, data))

    def logged(self, seq: int) -> None:
        assert self.live.sink is not None
        self.live.sink.log.advanced(seq)

    def notice(self, data: Any) -> None:
        assert self.live.sink is not None
        self.live.sink.notice(data)

    def status(self, msg: status.Message) -> None:
        live, kind = self.live, msg.kind
        if kind is status.Kind.RUNNING:
            self._running(msg.at)
        elif kind in status.TERMINAL:
            live.outcome.take(msg)
        elif kind is status.Kind.DONE:
            live.kept = KeptWork(files=msg.files or 0, bytes=msg.size or 0)
        elif kind is status.Kind.ARTIFACTS_ERROR and live.sink is not None:
            live.sink.note(f"[joblet] /work files: {msg.message}\n")

    def _running(self, at: float | None) -> None:
        live, record = self.live, self.live.record
        if record.status is JobStatus.RUNNING and at is not None:
            return  # an adopted job the record already shows running
        record.status, record.started_at = JobStatus.RUNNING, at or time.time()
        assert live.sink is not None
        live.sink.running()
        if live.translator is None:
            return  # its holder wrote RUNNING and enforces the timeout
        self.service.take(live, Step(live.translator.running()))
        if record.limits.timeout_s:
            live.timers.append(asyncio.get_running_loop().call_later(
                record.limits.timeout_s, self.service.signal_stop, live, "timeout"))

    def queued(self, message: str) -> None:
        """PENDING, with the scheduler's reason as the record's message and a status event."""
        record = self.live.record
        if record.status is not JobStatus.PENDING or record.message == message or not self.stored:
            return
        record.message = message
        self.service.store.save(record)
        self.service.store.log(record.id).append({"type": "status", "status": "PENDING", "message": message})

    def placed(self, placement: Placement) -> None:
        record = self.live.record
        record.node = placement.node
        record.cluster = ClusterRef(engine=placement.engine, job_id=placement.job_id, devices=placement.devices)
        if record.status is JobStatus.PENDING:
            record.message = None
        if self.stored:
            self.service.store.save(record)

    def ended(self, ending: Ending) -> None:
        """The sandbox has ended (what it held may still be going: `ending.cleanup`): the verdict,
        from what the sandbox reported, what the agent did to it, and what the executor knows (its
        holder died, its node was lost, Slurm refused it)."""
        live, record = self.live, self.live.record
        for timer in live.timers:
            timer.cancel()
        if ending.cpu_s is not None or ending.memory_peak_bytes is not None:
            record.usage = Usage(cpu_s=ending.cpu_s, memory_peak_bytes=ending.memory_peak_bytes)
        self.service.release_slot(live)
        self.service.cleanups.add(record.id, ending.cleanup)
        if ending.setup:
            live.outcome.take(status.setup_error(ending.setup))
        live.stop_reason = live.stop_reason or ending.stop  # one its holder applied or kept across a restart
        verdict = decide(live.outcome, live.stop_reason, ending.oom, record.limits)
        if ending.lost and not live.stop_reason and verdict.reason != "setup":
            verdict = Verdict(JobStatus.FAILED, "lost", ending.lost, verdict.exit_code, verdict.signal)
        if live.translator is not None:
            self.service.take(live, Step(live.translator.ended(live.outcome)))
        assert live.sink is not None
        try:
            live.sink.ended(verdict)
        finally:
            self.service.live.pop(record.id, None)
            live.done.set()

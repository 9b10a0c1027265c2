"""Where a job's sandbox's output and end go: its event log and record (a session's go to
agent/sessions; both are a livejob.SandboxSink).

The JobService runs every sandbox the same way (spec, launcher, limits, watching, cleanup); only
what becomes of its output differs. A job's output is text events in its log, capped at
`max_output_mb`; a session's stdout carries its runner's frames (agent/sessions).
"""

from __future__ import annotations

import codecs

from ..contract import JobStatus
from .livejob import Keeper, LiveJob
from .verdict import Verdict, display_events, outputs_event


class JobLog:
    """A job's sink (livejob.SandboxSink): its output as `stdout`/`stderr` events, its record's
    status and end."""

    def __init__(self, service: Keeper, live: LiveJob) -> None:
        self.service, self.live = service, live
        self.log = service.store.log(live.record.id)
        self.decoders = {kind: codecs.getincrementaldecoder("utf-8")(errors="replace") for kind in ("stdout", "stderr")}
        self.bytes = 0
        self.cut = False

    def output(self, kind: str, data: bytes) -> None:
        text = self.decoders[kind].decode(data, final=not data)
        self.bytes += len(data)
        limit = self.service.config.max_output_mb
        if text and self.bytes <= limit << 20:
            self.log.append({"type": kind, "data": text})
        elif text and not self.cut:
            self.cut = True  # the pipe is still drained, so the job never blocks on it
            self.log.append({"type": "stderr", "data": f"[joblet] output beyond {limit} MB is not kept\n"})

    def running(self) -> None:
        self.service.store.save(self.live.record)
        self.log.append({"type": "status", "status": JobStatus.RUNNING.value})

    def note(self, text: str) -> None:
        self.log.append({"type": "stderr", "data": text})

    def ended(self, verdict: Verdict) -> None:
        live, store = self.live, self.service.store
        if live.cell:
            for event in display_events(store.artifacts(live.record.id), self.service.config.max_outputs_bytes):
                self.log.append(event)
        if live.outputs and verdict.status == JobStatus.COMPLETED:
            try:
                self.log.append(outputs_event(store.artifacts(live.record.id), self.service.config.max_outputs_bytes))
            except OSError as exc:  # out of descriptors at this moment: the job still ends
                self.note(f"[joblet] the --out values could not be read: {exc.strerror}\n")
        live.record.kept_work = live.kept
        if live.hold_exit:
            live.verdict = verdict
        else:
            self.service.finish_record(live.record, verdict)

"""Following one job: its output written live, its result collected, Ctrl-C turned into a stop.

This is where output handling lives (ipyparallel keeps it with the results, not in the magic).
Output is written to whatever `sys.stdout` / `sys.stderr` are *at write time*, from the calling
thread: in ipykernel those streams carry the executing cell's parent header, so output lands in
the cell that ran the job and not in whichever cell is running when a thread gets to it.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .client import TERMINAL, JobletClient
from .errors import JobInterrupted, JobletError

EventHook = Callable[[dict[str, Any]], None]
STDERR_TAIL_CHARS = 64 * 1024


@dataclass
class JobResult:
    """What a followed job left: its final record, `--out` values, and the tail of its stderr."""

    job_id: str
    record: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    outputs_meta: dict[str, Any] = field(default_factory=dict)  # bytes, missing, errors, error
    stdout: list[str] = field(default_factory=list)   # only kept when not streaming
    stderr_tail: str = ""
    last_seq: int = 0

    @property
    def status(self) -> str:
        return str(self.record.get("status", ""))

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED"


class JobFollower:
    """Reads a job's events once each and writes stdout/stderr as they arrive."""

    def __init__(
        self,
        client: JobletClient,
        job_id: str,
        *,
        live: bool = True,
        on_event: EventHook | None = None,
    ):
        self.client = client
        self.job_id = job_id
        self.live = live
        self.on_event = on_event
        self.result = JobResult(job_id)
        self._stderr: deque[str] = deque()
        self._stderr_chars = 0
        self._buffer: list[tuple[str, str]] = []
        self._exit: dict[str, Any] | None = None

    # ---- events -------------------------------------------------------------------------

    def _handle(self, event: dict[str, Any]) -> None:
        seq = int(event.get("seq", 0) or 0)
        if seq:
            self.result.last_seq = seq
        kind = event.get("type")
        if kind in ("stdout", "stderr"):
            data = str(event.get("data", ""))
            if kind == "stderr":
                self._keep_stderr(data)
            if self.live:
                stream = sys.stdout if kind == "stdout" else sys.stderr
                stream.write(data)
                stream.flush()
            else:
                self._buffer.append((kind, data))
        elif kind == "outputs":
            values = event.get("values") or {}
            if isinstance(values, dict):
                self.result.outputs.update(values)
            self.result.outputs_meta = {k: v for k, v in event.items()
                                        if k not in ("seq", "type", "values")}
        elif kind == "exit":
            self._exit = event
        if self.on_event is not None:
            self.on_event(event)

    def _keep_stderr(self, data: str) -> None:
        self._stderr.append(data)
        self._stderr_chars += len(data)
        while self._stderr_chars > STDERR_TAIL_CHARS and len(self._stderr) > 1:
            self._stderr_chars -= len(self._stderr.popleft())

    def _read(self, follow: bool = True) -> None:
        for event in self.client.events(self.job_id, after=self.result.last_seq, follow=follow):
            self._handle(event)

    def _flush_buffer(self) -> None:
        for kind, data in self._buffer:
            (sys.stdout if kind == "stdout" else sys.stderr).write(data)
        self._buffer.clear()
        sys.stdout.flush()
        sys.stderr.flush()

    def _finish(self) -> JobResult:
        self._flush_buffer()
        self.result.stderr_tail = "".join(self._stderr)
        try:
            self.result.record = self.client.get_job(self.job_id)
        except JobletError:
            self.result.record = {"id": self.job_id, **(self._exit or {})}
        if self._exit and self.result.record.get("status") not in TERMINAL:
            # The record may lag the exit event by a moment; the event is authoritative.
            self.result.record.update(
                {k: v for k, v in self._exit.items() if k not in ("seq", "type")}
            )
        return self.result

    # ---- public -------------------------------------------------------------------------

    def history(self) -> JobResult:
        """Everything so far, without waiting for the job to end (`%joblet logs`)."""
        self._read(follow=False)
        return self._finish()

    def follow(self, stop_on_interrupt: bool = True) -> JobResult:
        """Until the job ends. Ctrl-C stops it (or, without `stop_on_interrupt`, detaches)."""
        try:
            self._read()
        except KeyboardInterrupt:
            self._interrupted(stop_on_interrupt)
        return self._finish()

    def _interrupted(self, stop: bool) -> None:
        if not stop:
            self._flush_buffer()
            raise JobInterrupted(
                self.job_id, "still running",
                f"detached; `%joblet attach {self.job_id}` follows it again, "
                f"`%joblet stop {self.job_id}` stops it",
            ) from None
        try:
            self.client.stop(self.job_id)
        except JobletError:
            pass  # it may have ended on its own in the meantime; the record says
        try:
            if self._exit is None:
                self._read()  # the rest of its output, up to its exit event
        except KeyboardInterrupt:
            self._flush_buffer()
            raise JobInterrupted(
                self.job_id, "stop requested",
                f"not waiting for it to end; `%joblet status {self.job_id}` shows how it ended",
            ) from None
        result = self._finish()
        status = result.status or "unknown"
        detail = "its processes are gone" if status in TERMINAL else "it may still be ending"
        raise JobInterrupted(self.job_id, status, detail) from None

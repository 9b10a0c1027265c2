"""Following one job: its output written live, its result collected, Ctrl-C turned into a stop.

This is where output handling lives (ipyparallel keeps it with the results, not in its magics).
Output is written to whatever `sys.stdout` / `sys.stderr` are *at write time*, from the calling
thread: in ipykernel those streams carry the executing cell's parent header, so output lands in
the cell that ran the job and not in whichever cell is running when a thread gets to it.

Live output is written in batches (`batching.OutputBatcher`: every 0.1 s or 64 KB): a thread of
its own reads the agent's event stream into a bounded queue, and the calling thread waits on the
queue no longer than the oldest unwritten output may wait. A job that ends, fails or is
interrupted has everything it printed written first. In a kernel, what the job printed last is
written without a flush: ipykernel sends what waits before the cell's reply (and before any display
or error), and each flush is a wait for its I/O thread.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .batching import OutputBatcher
from .client import JobletClient
from .errors import JobFailed, JobInterrupted, JobletError
from .events import AgentAway, DisplayEvent, Event, ExitEvent, OutputEvent, OutputsEvent
from .records import JobRecord

EventHook = Callable[[Event], None]
DisplayHook = Callable[[DisplayEvent], None]
STDERR_TAIL_CHARS = 64 * 1024
QUEUE_EVENTS = 1024          # events read ahead of the writer; the reader waits when it is full
QUEUE_BYTES = 16 << 20       # ... or when this much output waits (an event of a large output is 1 MB)
_END = object()


@dataclass
class JobResult:
    """What a followed job left: its final record, its `--out` values, the tail of its stderr."""

    record: JobRecord
    outputs: OutputsEvent | None = None
    displays: list[DisplayEvent] = field(default_factory=list)   # a last value, open figures
    stderr_tail: str = ""
    last_seq: int = 0

    @property
    def job_id(self) -> str:
        return self.record.id

    @property
    def ok(self) -> bool:
        return self.record.status == "COMPLETED"

    @property
    def values(self) -> dict[str, Any]:
        """The variables the job returned (`outputs` of the request)."""
        return dict(self.outputs.values) if self.outputs else {}

    def failure(self, tail_lines: int = 20) -> JobFailed | None:
        """The error of a job that did not complete (None if it did)."""
        return None if self.ok else JobFailed(self.record, self.stderr_tail, tail_lines)

    def returned(self, wanted: list[str]) -> list[str]:
        """One line per returned value of `wanted`: its type and JSON size."""
        values = self.values
        return [f"{n} ({type(values[n]).__name__}, {len(json.dumps(values[n]).encode())} B JSON)"
                for n in wanted if n in values]

    def missing(self, wanted: list[str]) -> str:
        """What of `wanted` did not come back, and why; empty when everything did."""
        meta = self.outputs or OutputsEvent(0, "outputs")
        if meta.error:
            return meta.error
        problems = [f"{name} not returned: {why}" for name, why in meta.errors.items()]
        absent = [n for n in wanted if n not in meta.values and n not in meta.errors]
        if absent:
            problems.append(f"the job did not define {', '.join(absent)}")
        return "; ".join(problems)


class JobFollower:
    """Reads a job's events once each and writes stdout/stderr as they arrive."""

    def __init__(
        self,
        client: JobletClient,
        job_id: str,
        *,
        live: bool = True,
        on_event: EventHook | None = None,
        on_display: DisplayHook | None = None,
    ):
        self.client = client
        self.job_id = job_id
        self.live = live
        self.on_event = on_event
        self.on_display = on_display
        self.result = JobResult(JobRecord(job_id))
        self.batcher = OutputBatcher(self._write)
        self._flush_each = True     # batches while the job runs are flushed: they show at once
        self._pump: EventPump | None = None
        self._stderr: deque[str] = deque()
        self._stderr_chars = 0
        self._buffer: list[tuple[str, str]] = []
        self._exit: ExitEvent | None = None

    # ---- events -------------------------------------------------------------------------

    def _handle(self, event: Event) -> None:
        self.result.last_seq = event.seq or self.result.last_seq
        if isinstance(event, AgentAway):
            self._note(event.text())
        elif isinstance(event, OutputEvent):
            if event.type == "stderr":
                self._keep_stderr(event.data)
            if self.live:
                self.batcher.add(event.type, event.data)
            else:
                self._buffer.append((event.type, event.data))
        elif isinstance(event, DisplayEvent):
            self.result.displays.append(event)
            if self.live and self.on_display is not None:
                self.batcher.flush()  # what the job printed before it comes first
                self.on_display(event)
        elif isinstance(event, OutputsEvent):
            self.result.outputs = event
        elif isinstance(event, ExitEvent):
            self._exit = event
        if self.on_event is not None:
            self.on_event(event)

    def _note(self, text: str) -> None:
        """A line of the client's own, in order with the output (not kept as the job's stderr)."""
        if self.live:
            self.batcher.add("stderr", text)
        else:
            self._buffer.append(("stderr", text))

    def _keep_stderr(self, data: str) -> None:
        self._stderr.append(data)
        self._stderr_chars += len(data)
        while self._stderr_chars > STDERR_TAIL_CHARS and len(self._stderr) > 1:
            self._stderr_chars -= len(self._stderr.popleft())

    def _read(self, follow: bool = True) -> None:
        if not (follow and self.live):
            for event in self.client.events(self.job_id, after=self.result.last_seq, follow=follow):
                self._handle(event)
            return
        self.start()
        assert self._pump is not None
        while True:
            try:
                item = self._pump.get(self.batcher.due_in())
            except queue.Empty:
                self.batcher.tick()
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            self._handle(item)

    def _write(self, kind: str, pieces: list[str]) -> None:
        """One batch to the stream that is current now (the running cell's, in a kernel), its
        pieces written as they are (not joined into a copy first), then flushed once."""
        stream = sys.stdout if kind == "stdout" else sys.stderr
        for text in pieces:
            stream.write(text)
        if self._flush_each or not self_flushing(stream):
            stream.flush()

    def _flush_buffer(self) -> None:
        self._flush_each = False
        self.batcher.flush()
        for kind, data in self._buffer:
            (sys.stdout if kind == "stdout" else sys.stderr).write(data)
        self._buffer.clear()
        if not self.live and self.on_display is not None:
            for display in self.result.displays:
                self.on_display(display)
        for stream in (sys.stdout, sys.stderr):
            if not self_flushing(stream):
                stream.flush()

    def _finish(self) -> JobResult:
        self._flush_buffer()
        self.close()
        self.result.stderr_tail = "".join(self._stderr)
        carried = self._exit.ended_record() if self._exit is not None else None
        if carried is not None and carried.id == self.job_id:
            self.result.record = carried
            return self.result
        try:
            record = self.client.get_job(self.job_id)
        except JobletError:
            record = JobRecord(self.job_id)
        if self._exit and not record.finished:
            # The record may lag the exit event by a moment; the event is authoritative.
            record = self._exit.applied_to(record)
        self.result.record = record
        return self.result

    # ---- public -------------------------------------------------------------------------

    def start(self) -> "JobFollower":
        """Start reading the job's events now, on a thread of their own (e.g. while a status line
        is made); `follow()` takes them from there. `close()` if `follow()` will not be called."""
        if self.live and self._pump is None:
            self._pump = EventPump(self.client.clone(), self.job_id, self.result.last_seq)
        return self

    def close(self) -> None:
        if self._pump is not None:
            self._pump.close()

    def history(self) -> JobResult:
        """Everything so far, without waiting for the job to end."""
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
            self.close()
            raise JobInterrupted(self.job_id, "still running", "detached", detached=True) from None
        try:
            self.client.stop(self.job_id)
        except JobletError:
            pass  # it may have ended on its own in the meantime; the record says
        try:
            if self._exit is None:
                self._read()  # the rest of its output, up to its exit event
        except KeyboardInterrupt:
            self._flush_buffer()
            self.close()
            raise JobInterrupted(self.job_id, "stop requested", "not waiting for it to end") from None
        record = self._finish().record
        detail = "its processes are gone" if record.finished else "it may still be ending"
        raise JobInterrupted(self.job_id, record.status.value, detail) from None


def self_flushing(stream: Any) -> bool:
    """ipykernel's streams (they keep `_flush_pending`) send what waits every 0.2 s and before
    anything else of the cell: a display, an error, the cell's reply."""
    return hasattr(stream, "_flush_pending")


def flush_pending(stream: Any) -> None:
    """Flush `stream` where something may wait in it: a flush of ipykernel's waits for the kernel's
    I/O thread (0.4-2 ms on a busy machine), also when nothing does."""
    if getattr(stream, "_flush_pending", True):
        stream.flush()


class EventPump:
    """Reads a job's event stream on a thread of its own into a bounded queue.

    The follower's thread only takes from the queue, with a timeout, so it can write batches on
    time while the stream is quiet, and Ctrl-C reaches it at once. After `close()` the thread
    ends at the stream's next event (or its end); it holds only its own connection meanwhile.
    """

    def __init__(self, client: JobletClient, job_id: str, after: int):
        self.client = client
        self.job_id = job_id
        self.after = after
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_EVENTS)
        self.room = threading.Condition()
        self.queued_bytes = 0
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"joblet-events-{job_id}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.client.events(self.job_id, after=self.after, follow=True):
                if not self._put(event):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the follower, which raises it
            self._put(exc)
            return
        self.client.release()  # the stream ended cleanly: its connection serves the next cell
        self._put(_END)

    def _put(self, item: Any) -> bool:
        size = _size(item)
        with self.room:
            while self.queued_bytes > QUEUE_BYTES and not self.closed.is_set():
                self.room.wait(0.2)
            self.queued_bytes += size
        while not self.closed.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float | None) -> Any:
        """The next event, `_END`, or the exception that ended the stream; `queue.Empty` on timeout."""
        item = self.queue.get(timeout=timeout)
        size = _size(item)
        if size:
            with self.room:
                self.queued_bytes -= size
                self.room.notify()
        return item

    def close(self) -> None:
        self.closed.set()


def _size(item: Any) -> int:
    return len(item.data) if isinstance(item, OutputEvent) else 0

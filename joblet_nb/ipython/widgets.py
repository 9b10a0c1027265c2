"""ipywidgets 8 views: the live status line of a running cell and the progress of a runtime build
(the `%joblet ui` panel is `panel.py`).

Every widget here adds a `text/html` and `text/plain` snapshot to its mime bundle: an HTML export
or a viewer without a widget manager shows that instead of a blank space. A widget's snapshot is
taken when it is displayed; `Snapshot.refresh_display()` re-sends it when a cell ends, so the
saved notebook shows the final state.

Clicks reach the kernel only when no cell is running (measured: ipykernel 7.4, JupyterLab 4.6), so
the monitor's Stop buttons serve background jobs and other cells; Ctrl-C stops a foreground cell.
"""

from __future__ import annotations

import dataclasses
import html
import threading
import time
from typing import Any

import ipywidgets as w

from ..core.client import JobletClient
from ..core.errors import JobletError
from ..core.events import Event, ExitEvent, OutputEvent, ProgressEvent, StatusEvent
from ..core.records import JobRecord
from .display import (elapsed, ended_text, fmt_seconds, lean_publishing, placement_cells, usage_text,
                      waiting_text)

STATE_COLOURS = {
    "PENDING": "#888",
    "RUNNING": "#1565c0",
    "COMPLETED": "#2e7d32",
    "FAILED": "#c62828",
    "STOPPED": "#ef6c00",
}


class Snapshot:
    """Mixin: a text/HTML snapshot in the mime bundle, next to the live widget view."""

    _display_handle: Any = None

    def snapshot_text(self) -> str:
        raise NotImplementedError

    def snapshot_html(self) -> str:
        return f"<pre>{html.escape(self.snapshot_text())}</pre>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}  # type: ignore[misc]
        bundle["text/plain"] = self.snapshot_text()
        bundle["text/html"] = self.snapshot_html()
        return bundle

    def show(self) -> None:
        """Display with a display id, so that the snapshot can be refreshed later."""
        from IPython import get_ipython
        from IPython.display import display

        with lean_publishing(get_ipython()):
            self._display_handle = display(self, display_id=True)

    def refresh_display(self) -> None:
        from IPython import get_ipython

        if self._display_handle is not None:
            with lean_publishing(get_ipython(), in_place=True):
                self._display_handle.update(self)


# ---- the status line of a running cell --------------------------------------------------------


class StatusLine(Snapshot, w.HTML):
    """Job id, state, elapsed time, and CPU / memory once the record has `usage`."""

    def __init__(self, job_id: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.add_class("joblet-status")
        self.job_id = job_id
        self.record = JobRecord(job_id)
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._render()

    def update(self, record: JobRecord) -> None:
        """Show this record of the job and redraw."""
        with self._lock:
            self.record = record
            self._render()

    def on_event(self, event: Event) -> None:
        """Status and exit events move the state without waiting for the next poll."""
        if isinstance(event, StatusEvent):
            message = event.extra.get("message") if event.status.value == "PENDING" else None
            self.update(dataclasses.replace(self.record, status=event.status, message=message))
        elif isinstance(event, ExitEvent):
            self.update(event.applied_to(self.record))

    def _elapsed(self) -> float:
        from_record = elapsed(self.record)
        if from_record is not None and (self.record.ended_at or self.record.started_at):
            return from_record
        return time.monotonic() - self._t0

    def _parts(self) -> list[tuple[str, str]]:
        status = self.record.status.value
        parts = [("job", self.job_id), ("state", status), ("elapsed", fmt_seconds(self._elapsed()))]
        ended = ended_text(self.record)
        if ended:
            parts.append(("ended", ended))
        if waiting_text(self.record):
            parts.append(("waiting", waiting_text(self.record)))
        node, job, devices = placement_cells(self.record)
        if node:
            parts.append(("node", " · ".join(x for x in (node, job, devices) if x)))
        usage = usage_text(self.record)
        if usage:
            parts.append(("usage", usage))
        return parts

    def _render(self) -> None:
        bits = []
        for key, value in self._parts():
            if key == "state":
                colour = STATE_COLOURS.get(value, "#444")
                bits.append(f"<b style='color:{colour}'>{html.escape(value)}</b>")
            else:
                bits.append(f"{html.escape(key)} <code>{html.escape(value)}</code>")
        self.value = "<span class='joblet-status-text'>joblet · " + " · ".join(bits) + "</span>"

    def snapshot_text(self) -> str:
        return "joblet " + " ".join(f"{k}={v}" for k, v in self._parts())

    def snapshot_html(self) -> str:
        return self.value


class StatusTracker:
    """Polls the job record in a thread so elapsed time and usage move while output is quiet.

    It only updates a widget (a comm message); it never writes to the cell's output streams.
    """

    def __init__(self, client: JobletClient, status: StatusLine, interval: float = 1.0):
        self.client = client.clone()
        self.status = status
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="joblet-status", daemon=True)

    def start(self) -> "StatusTracker":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.client.release()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                record = self.client.get_job(self.status.job_id)
            except JobletError:
                continue
            except Exception:  # a status line must never break a cell
                continue
            self.status.update(record)
            if record.finished:
                return


# ---- a runtime build's progress ---------------------------------------------------------------


class BuildProgress(Snapshot, w.VBox):
    """A build's phases as a bar (`progress` events: step N of M), and within a phase, which has
    no step count of its own, a spinner with the phase's elapsed time and the last line of its log
    (the log itself streams into the cell). A thread turns the spinner while the log is quiet."""

    SPIN = "◐◓◑◒"

    def __init__(self, name: str, tick_s: float = 0.5, **kwargs: Any):
        self.runtime_name = name
        self.bar = w.IntProgress(value=0, min=0, max=1, description="build",
                                 layout=w.Layout(width="60%"))
        self.label = w.HTML(value=f"runtime <code>{html.escape(name)}</code>: starting")
        self.label.add_class("joblet-build-label")
        self._progress = {"phase": "", "step": 0, "steps": 0, "message": "starting", "status": ""}
        self._phase_t0 = time.monotonic()
        self._last_line = ""
        self._turns = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        super().__init__(children=[self.bar, self.label], **kwargs)
        self.add_class("joblet-build")
        threading.Thread(target=self._spin, args=(tick_s,), daemon=True, name="joblet-build").start()

    def on_event(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, ProgressEvent):
                self._progress.update(phase=event.phase, step=event.step, steps=event.steps,
                                      message=event.message)
                self._phase_t0, self._last_line = time.monotonic(), ""
                if event.steps:
                    self.bar.max = event.steps
                    self.bar.value = min(event.step, event.steps)
            elif isinstance(event, OutputEvent):
                lines = [ln for ln in event.data.splitlines() if ln.strip()]
                self._last_line = lines[-1][:160] if lines else self._last_line
            elif isinstance(event, ExitEvent):
                self._progress["status"] = event.status.value
                self.bar.bar_style = "success" if self._progress["status"] == "COMPLETED" else "danger"
                if self._progress["status"] == "COMPLETED":
                    self.bar.value = self.bar.max
                self._done.set()
            self._render()

    def _spin(self, tick_s: float) -> None:
        while not self._done.wait(tick_s):
            with self._lock:
                self._turns += 1
                self._render()

    def stop(self) -> None:
        self._done.set()

    def _render(self) -> None:
        self.label.value = html.escape(self.snapshot_text())

    def snapshot_text(self) -> str:
        s = self._progress
        step = f"step {s['step']}/{s['steps']} " if s["steps"] else ""
        phase = f"{s['phase']}: " if s["phase"] else ""
        if s["status"]:
            return f"runtime {self.runtime_name}: {step}{phase}{s['message']} [{s['status']}]"
        spin = self.SPIN[self._turns % len(self.SPIN)]
        line = f" · {self._last_line}" if self._last_line else ""
        took = fmt_seconds(time.monotonic() - self._phase_t0)
        return f"runtime {self.runtime_name}: {step}{phase}{s['message']} {spin} {took}{line}"

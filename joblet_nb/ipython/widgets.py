"""ipywidgets 8 views: the live status line of a running cell, the `%joblet ui` panel, and the
progress bar of a runtime build.

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
from typing import Any, Callable

import ipywidgets as w

from ..core.client import JobletClient
from ..core.errors import JobletError
from ..core.events import Event, ExitEvent, ProgressEvent, StatusEvent
from ..core.records import JobRecord
from .display import elapsed, ended_text, fmt_seconds, jobs_table, usage_text

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
        from IPython.display import display

        self._display_handle = display(self, display_id=True)

    def refresh_display(self) -> None:
        if self._display_handle is not None:
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
            self.update(dataclasses.replace(self.record, status=event.status))
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
    """A progress bar fed by `progress` events; the build log itself streams into the cell."""

    def __init__(self, name: str, **kwargs: Any):
        self.runtime_name = name
        self.bar = w.IntProgress(value=0, min=0, max=1, description="build",
                                 layout=w.Layout(width="60%"))
        self.label = w.HTML(value=f"runtime <code>{html.escape(name)}</code>: starting")
        self._progress = {"phase": "", "step": 0, "steps": 0, "message": "starting", "status": ""}
        super().__init__(children=[self.bar, self.label], **kwargs)
        self.add_class("joblet-build")

    def on_event(self, event: Event) -> None:
        if isinstance(event, ProgressEvent):
            self._progress.update(phase=event.phase, step=event.step, steps=event.steps,
                                  message=event.message)
            if event.steps:
                self.bar.max = event.steps
                self.bar.value = min(event.step, event.steps)
        elif isinstance(event, ExitEvent):
            self._progress["status"] = event.status.value
            self.bar.bar_style = "success" if self._progress["status"] == "COMPLETED" else "danger"
            if self._progress["status"] == "COMPLETED":
                self.bar.value = self.bar.max
        self.label.value = html.escape(self.snapshot_text())

    def snapshot_text(self) -> str:
        s = self._progress
        step = f"step {s['step']}/{s['steps']} " if s["steps"] else ""
        phase = f"{s['phase']}: " if s["phase"] else ""
        done = f" [{s['status']}]" if s["status"] else ""
        return f"runtime {self.runtime_name}: {step}{phase}{s['message']}{done}"


# ---- the %joblet ui panel ---------------------------------------------------------------------

BASE_RUNTIME = "(base python3)"
SLIDERS: list[tuple[str, str, int, int, int, int]] = [
    # limit key, label, min, max, step, initial value shown
    ("memory_mb", "memory MB", 32, 16384, 32, 512),
    ("cpu_percent", "CPU %", 10, 800, 10, 100),
    ("pids", "pids", 8, 4096, 8, 256),
    ("timeout_s", "timeout s", 5, 7200, 5, 600),
    ("disk_mb", "disk MB", 16, 16384, 16, 256),
]


class JobMonitor(Snapshot, w.VBox):
    """The caller's jobs, with a Stop button on each running one and a Refresh button."""

    def __init__(self, client: JobletClient, **kwargs: Any):
        self.client = client
        self.jobs: list[JobRecord] = []
        self.message = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.add_class("joblet-refresh")
        self.message.add_class("joblet-message")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.rows = w.VBox()
        super().__init__(children=[w.HBox([self.refresh_button, self.message]), self.rows],
                         **kwargs)
        self.add_class("joblet-monitor")
        self.refresh()

    def refresh(self) -> None:
        try:
            self.jobs = self.client.list_jobs()
            self.message.value = ""
        except JobletError as exc:
            self.message.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
        header = w.HTML("<b>" + " · ".join(["id", "status", "runtime", "elapsed", "usage"]) + "</b>")
        self.rows.children = [header] + [self._row(job) for job in self.jobs]

    def _row(self, job: JobRecord) -> w.HBox:
        colour = STATE_COLOURS.get(job.status, "#444")
        text = (f"<code>{html.escape(job.id)}</code> · <b style='color:{colour}'>{job.status.value}</b> · "
                f"{html.escape(job.runtime or 'base')} · {fmt_seconds(elapsed(job))} · "
                f"{html.escape(usage_text(job))}")
        stop = w.Button(description="Stop", button_style="danger",
                        disabled=job.finished, layout=w.Layout(width="70px"))
        stop.add_class("joblet-stop")
        stop.on_click(lambda _b, jid=job.id: self.stop(jid))
        row = w.HBox([stop, w.HTML(text)])
        row.add_class("joblet-job")
        return row

    def stop(self, job_id: str) -> None:
        try:
            self.client.stop(job_id)
            self.message.value = f"stop sent to <code>{html.escape(job_id)}</code>"
        except JobletError as exc:
            self.message.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
        self.refresh()

    def snapshot_text(self) -> str:
        return repr(jobs_table(self.jobs))

    def snapshot_html(self) -> str:
        return jobs_table(self.jobs)._repr_html_()


class ControlPanel(Snapshot, w.VBox):
    """Runtime picker and limit sliders that set the session defaults, and the job monitor.

    `target` is anything with `default_runtime` (str) and `default_limits` (dict) attributes:
    the `JobletMagics` instance, whose next `%%joblet run` uses them.
    """

    def __init__(self, client: JobletClient, target: Any, **kwargs: Any):
        self.client = client
        self.target = target
        self.error = w.HTML()
        names = [BASE_RUNTIME]
        try:
            names += [rt.name for rt in client.runtimes()]
        except JobletError as exc:
            self.error.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
        current = target.default_runtime or BASE_RUNTIME
        if current not in names:
            names.append(current)
        self.runtime = w.Dropdown(options=names, value=current, description="runtime")
        self.runtime.add_class("joblet-runtime")
        self.runtime.observe(self._runtime_changed, names="value")
        self.sliders: dict[str, w.IntSlider] = {}
        limits = dict(target.default_limits or {})
        for key, label, lo, hi, step, initial in SLIDERS:
            value = int(limits.get(key, initial))
            slider = w.IntSlider(value=min(max(value, lo), hi), min=lo, max=hi, step=step,
                                 description=label, continuous_update=False,
                                 style={"description_width": "90px"})
            slider.add_class(f"joblet-limit-{key.replace('_', '-')}")
            slider.observe(self._limit_changed(key), names="value")
            self.sliders[key] = slider
        self.reset = w.Button(description="Clear limits", tooltip="use the agent's defaults")
        self.reset.add_class("joblet-clear")
        self.reset.on_click(lambda _b: self._clear_limits())
        self.summary = w.HTML()
        self.summary.add_class("joblet-summary")
        self.monitor = JobMonitor(client)
        super().__init__(
            children=[
                w.HTML("<b>joblet</b> session defaults"), self.error, self.runtime,
                *self.sliders.values(), w.HBox([self.reset, self.summary]),
                w.HTML("<b>jobs</b>"), self.monitor,
            ],
            **kwargs,
        )
        self.add_class("joblet-ui")
        self._update_summary()

    def _runtime_changed(self, change: dict[str, Any]) -> None:
        value = change["new"]
        self.target.default_runtime = "" if value == BASE_RUNTIME else value
        self._update_summary()

    def _limit_changed(self, key: str) -> Callable[[dict[str, Any]], None]:
        def changed(change: dict[str, Any]) -> None:
            limits = dict(self.target.default_limits or {})
            limits[key] = int(change["new"])
            self.target.default_limits = limits
            self._update_summary()
        return changed

    def _clear_limits(self) -> None:
        self.target.default_limits = {}
        self._update_summary()

    def _update_summary(self) -> None:
        self.summary.value = html.escape(self._defaults_text())

    def _defaults_text(self) -> str:
        limits = self.target.default_limits or {}
        text = ", ".join(f"{k}={v}" for k, v in sorted(limits.items())) or "agent defaults"
        return f"runtime={self.target.default_runtime or 'base'}; limits: {text}"

    def snapshot_text(self) -> str:
        return f"joblet session defaults: {self._defaults_text()}\n{self.monitor.snapshot_text()}"

    def snapshot_html(self) -> str:
        return (f"<p><b>joblet</b> session defaults: {html.escape(self._defaults_text())}</p>"
                + self.monitor.snapshot_html())

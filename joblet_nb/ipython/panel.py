"""The `%joblet ui` panel: a runtime picker and limit sliders (the notebook's defaults for the next
cells), and the caller's jobs with a Stop button each.

It shows what is true. The sliders start at the limits a job really gets (the agent's defaults,
read from `GET /v1/limits`), reach up to the agent's maximums, and move on a log scale for memory
and disk; an untouched slider sets nothing, and Clear puts them back. A stopped job's row says
"stopping..." and then how the job ended, polled on a thread until it has; running jobs come first,
then the newest, 20 at a time.

Clicks reach the kernel only when no cell is running (measured: ipykernel 7.4, JupyterLab 4.6), so
the Stop buttons serve background jobs and other cells; Ctrl-C stops a foreground cell.
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any, Callable

import ipywidgets as w

from ..core.client import JobletClient
from ..core.errors import JobletError
from ..core.records import JobRecord
from .display import elapsed, fmt_seconds, jobs_table, usage_text
from .widgets import STATE_COLOURS, Snapshot

BASE_RUNTIME = "(base python3)"
PAGE = 20
POLL_S = 0.5
POLL_LIMIT_S = 120.0
NO_LIMIT = "no limit"   # the label of value 0: a slider option cannot be None


def _error_html(exc: Exception) -> str:
    return f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"


class JobMonitor(Snapshot, w.VBox):
    """The caller's jobs: running first, then newest first, `PAGE` at a time."""

    def __init__(self, client: JobletClient, **kwargs: Any):
        self.client = client
        self.jobs: list[JobRecord] = []
        self.shown = PAGE
        self.stopping: dict[str, str] = {}   # job id -> what its row says until the job has ended
        self.message = w.HTML()
        self.message.add_class("joblet-message")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.add_class("joblet-refresh")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.more = w.Button(description="more")
        self.more.add_class("joblet-more")
        self.more.on_click(lambda _b: self.show_more())
        self.rows = w.VBox()
        self._lock = threading.Lock()
        super().__init__(children=[w.HBox([self.refresh_button, self.message]), self.rows, self.more],
                         **kwargs)
        self.add_class("joblet-monitor")
        self.refresh()

    def refresh(self) -> None:
        try:
            jobs = self.client.list_jobs()
        except JobletError as exc:
            self.message.value = _error_html(exc)
            return
        running = sorted((j for j in jobs if not j.finished), key=lambda j: -(j.created_at or 0))
        ended = sorted((j for j in jobs if j.finished), key=lambda j: -(j.created_at or 0))
        with self._lock:
            self.jobs = running + ended
            self._render()

    def show_more(self) -> None:
        self.shown += PAGE
        with self._lock:
            self._render()

    def _render(self) -> None:
        header = w.HTML("<b>" + " · ".join(["id", "status", "runtime", "elapsed", "usage"]) + "</b>")
        self.rows.children = [header] + [self._row(job) for job in self.jobs[:self.shown]]
        hidden = len(self.jobs) - self.shown
        self.more.description = f"more ({hidden} older)" if hidden > 0 else "more"
        self.more.layout.display = "" if hidden > 0 else "none"

    def _row(self, job: JobRecord) -> w.HBox:
        state = self.stopping.get(job.id, job.status.value)
        colour = STATE_COLOURS.get(state, "#444")
        text = (f"<code>{html.escape(job.id)}</code> · <b class='joblet-state' style='color:{colour}'>"
                f"{html.escape(state)}</b> · {html.escape(job.runtime or 'base')} · "
                f"{fmt_seconds(elapsed(job))} · {html.escape(usage_text(job))}")
        stop = w.Button(description="Stop", button_style="danger", layout=w.Layout(width="70px"),
                        disabled=job.finished or job.id in self.stopping)
        stop.add_class("joblet-stop")
        stop.on_click(lambda _b, jid=job.id: self.stop(jid))
        row = w.HBox([stop, w.HTML(text)])
        row.add_class("joblet-job")
        return row

    def stop(self, job_id: str) -> None:
        """Stop the job; its row says "stopping..." until a poll sees how it ended."""
        with self._lock:
            self.stopping[job_id] = "stopping..."
            self._render()
        try:
            self.client.stop(job_id)
            self.message.value = f"stop sent to <code>{html.escape(job_id)}</code>"
        except JobletError as exc:
            self.message.value = _error_html(exc)
        threading.Thread(target=self._await_end, args=(job_id,), daemon=True,
                         name=f"joblet-stop-{job_id}").start()

    def _await_end(self, job_id: str) -> None:
        client = self.client.clone()
        deadline = time.monotonic() + POLL_LIMIT_S
        while time.monotonic() < deadline:
            try:
                record = client.get_job(job_id)
            except JobletError:
                break
            if record.finished:
                self.message.value = (f"job <code>{html.escape(job_id)}</code> "
                                      f"{html.escape(record.status.value)}")
                break
            time.sleep(POLL_S)
        self.stopping.pop(job_id, None)
        self.refresh()

    def snapshot_text(self) -> str:
        return repr(jobs_table(self.jobs[:self.shown]))

    def snapshot_html(self) -> str:
        return jobs_table(self.jobs[:self.shown])._repr_html_()


# ---- the limit sliders ---------------------------------------------------------------------------

def _size_label(mb: int) -> str:
    return f"{mb / 1024:.3g} GB" if mb >= 1024 else f"{mb} MB"


def _seconds_label(s: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:g} s"


def _upto(values: tuple[float, ...], top: float) -> list[float]:
    return sorted({v for v in values if v < top} | {top})


def _sizes(lo: int, top: int) -> list[int]:
    """Memory and disk: powers of two and the halves between them (a log scale)."""
    values, v = [], lo
    while v < top:
        values += [v, v * 3 // 2]
        v *= 2
    return sorted({x for x in values if x < top} | {top})


CPU_STEPS = (10, 25, 50, 100, 150, 200, 300, 400, 600, 800, 1200, 1600, 3200, 6400)
TIMEOUT_STEPS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)
# key, label, options(maximum) -> values, label of a value
SLIDERS: list[tuple[str, str, Callable[[float], list[float]], Callable[[float], str]]] = [
    ("memory_mb", "memory", lambda top: _sizes(32, int(top)), lambda v: _size_label(int(v))),
    ("cpu_percent", "CPU", lambda top: _upto(CPU_STEPS, top), lambda v: f"{v:g}%"),
    ("pids", "processes", lambda top: _sizes(16, int(top)), lambda v: f"{v:g}"),
    ("timeout_s", "timeout", lambda top: _upto(TIMEOUT_STEPS, top), _seconds_label),
    ("disk_mb", "disk", lambda top: _sizes(16, int(top)), lambda v: _size_label(int(v))),
]
FALLBACK_MAXIMUM = {"memory_mb": 16384, "cpu_percent": 800, "pids": 4096, "timeout_s": 86400, "disk_mb": 16384}


class LimitSliders(w.VBox):
    """One slider per limit, starting at what the agent applies; `changed(limits)` on a move."""

    def __init__(self, agent_limits: dict[str, Any], chosen: dict[str, Any],
                 changed: Callable[[dict[str, Any]], None]):
        self.defaults = dict(agent_limits.get("defaults") or {})
        maximum = {**FALLBACK_MAXIMUM, **(agent_limits.get("maximum") or {})}
        self.changed = changed
        self.chosen = dict(chosen)
        self.sliders: dict[str, w.SelectionSlider] = {}
        self._quiet = False
        for key, label, values, name in SLIDERS:
            options = [(name(v), v) for v in values(float(maximum[key]))]
            if self.defaults.get(key) is None:
                options.append((NO_LIMIT, 0))
            elif self.defaults[key] not in [v for _, v in options]:
                options = sorted(options + [(name(self.defaults[key]), self.defaults[key])],
                                 key=lambda o: o[1])
            slider = w.SelectionSlider(options=options, description=label, continuous_update=False,
                                       style={"description_width": "80px"},
                                       layout=w.Layout(width="420px"))
            slider.add_class(f"joblet-limit-{key.replace('_', '-')}")
            slider.value = self._nearest(options, self.chosen.get(key, self.defaults.get(key)))
            slider.observe(self._moved(key), names="value")
            self.sliders[key] = slider
        super().__init__(children=list(self.sliders.values()))

    @staticmethod
    def _nearest(options: list[tuple[str, Any]], value: Any) -> Any:
        """The option showing `value` (None: no limit, else the largest)."""
        values = [v for _, v in options]
        if value is None:
            return 0 if 0 in values else values[-1]
        if value in values:
            return value
        return min((v for v in values if v), key=lambda v: abs(v - float(value)))

    def _moved(self, key: str) -> Callable[[dict[str, Any]], None]:
        def moved(change: dict[str, Any]) -> None:
            if self._quiet:
                return
            if not change["new"]:
                self.chosen.pop(key, None)
            else:
                self.chosen[key] = change["new"]
            self.changed(dict(self.chosen))
        return moved

    def clear(self) -> None:
        """Back to the agent's defaults, setting nothing."""
        self._quiet = True
        try:
            for key, slider in self.sliders.items():
                slider.value = self._nearest(list(slider.options), self.defaults.get(key))
        finally:
            self._quiet = False
        self.chosen = {}
        self.changed({})


class ControlPanel(Snapshot, w.VBox):
    """Runtime picker and limit sliders that set the notebook's defaults, and the job monitor.

    `target` is anything with `default_runtime` (str) and `default_limits` (dict) attributes:
    the `JobletMagics` instance, whose next `%%joblet run` uses them.
    """

    def __init__(self, client: JobletClient, target: Any, **kwargs: Any):
        self.client = client
        self.target = target
        self.error = w.HTML()
        names = [BASE_RUNTIME]
        agent_limits: dict[str, Any] = {}
        try:
            names += [rt.name for rt in client.runtimes()]
            agent_limits = client.limits()
        except JobletError as exc:
            self.error.value = _error_html(exc)
        current = target.default_runtime or BASE_RUNTIME
        if current not in names:
            names.append(current)
        self.runtime = w.Dropdown(options=names, value=current, description="runtime")
        self.runtime.add_class("joblet-runtime")
        self.runtime.observe(self._runtime_changed, names="value")
        self.limits = LimitSliders(agent_limits, dict(target.default_limits or {}), self._limits_changed)
        self.reset = w.Button(description="Clear", tooltip="back to the agent's defaults")
        self.reset.add_class("joblet-clear")
        self.reset.on_click(lambda _b: self.limits.clear())
        self.summary = w.HTML()
        self.summary.add_class("joblet-summary")
        self.monitor = JobMonitor(client)
        super().__init__(children=[w.HTML("<b>joblet</b> defaults of this notebook's cells"), self.error,
                                   self.runtime, self.limits, w.HBox([self.reset, self.summary]),
                                   w.HTML("<b>jobs</b>"), self.monitor], **kwargs)
        self.add_class("joblet-ui")
        self._update_summary()

    def _runtime_changed(self, change: dict[str, Any]) -> None:
        value = change["new"]
        self.target.default_runtime = "" if value == BASE_RUNTIME else value
        self._update_summary()

    def _limits_changed(self, limits: dict[str, Any]) -> None:
        self.target.default_limits = limits
        self._update_summary()

    def _update_summary(self) -> None:
        self.summary.value = html.escape(self._defaults_text())

    def _defaults_text(self) -> str:
        limits = self.target.default_limits or {}
        text = ", ".join(f"{k}={v:g}" for k, v in sorted(limits.items())) or "agent defaults"
        return f"runtime={self.target.default_runtime or 'base'}; limits: {text}"

    def snapshot_text(self) -> str:
        return f"joblet defaults: {self._defaults_text()}\n{self.monitor.snapshot_text()}"

    def snapshot_html(self) -> str:
        return (f"<p><b>joblet</b> defaults: {html.escape(self._defaults_text())}</p>"
                + self.monitor.snapshot_html())

"""Tables of jobs, job records and runtimes: HTML for Jupyter, plain text for everything else;
and `note`, the extension's own lines.

A `Table` is an ordinary object with `_repr_html_` and `__repr__`, so a terminal, an HTML export
and a notebook each get a readable view without any widget manager.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import sys
import time
from enum import Enum
from typing import Any, Iterable, Iterator, Sequence

from ..core.records import JobRecord, RuntimeInfo, to_json
from ..core.stream import flush_pending


def note(message: str) -> None:
    """A line of the extension's own: plain output (stdout), marked `[joblet]`; not stderr, which
    notebooks paint as an error. The job's own output is written (flushed) before it."""
    sys.stdout.write(f"[joblet] {message}\n")
    sys.stdout.flush()


@contextlib.contextmanager
def lean_publishing(shell: Any, in_place: bool = False) -> Iterator[None]:
    """Display calls inside skip ipykernel's flush of stdout and stderr where nothing waits in them
    (each is a wait for the kernel's I/O thread, 0.4-2 ms on a busy machine); `in_place`: they only
    update an output already shown, whose place no flush changes, so they never flush."""
    publisher = getattr(shell, "display_pub", None)
    if not callable(getattr(publisher, "_flush_streams", None)):
        yield
        return
    publisher._flush_streams = (lambda: None) if in_place else \
        (lambda: [flush_pending(stream) for stream in (sys.stdout, sys.stderr)])
    try:
        yield
    finally:
        del publisher._flush_streams


class Table:
    """Rows of cells under a header, with an optional title."""

    def __init__(self, header: Sequence[str], rows: Iterable[Sequence[Any]], title: str = ""):
        self.header = list(header)
        self.rows = [["" if c is None else str(c) for c in row] for row in rows]
        self.title = title

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in row)
            + "</tr>"
            for row in self.rows
        )
        if not self.rows:
            body = f"<tr><td colspan='{len(self.header)}'><i>none</i></td></tr>"
        caption = f"<caption style='text-align:left'><b>{html.escape(self.title)}</b></caption>" \
            if self.title else ""
        return f"<table class='joblet'>{caption}<thead><tr>{head}</tr></thead>" \
               f"<tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        widths = [len(h) for h in self.header]
        for row in self.rows:
            for i, c in enumerate(row):
                widths[i] = max(widths[i], len(c))
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [self.title] if self.title else []
        lines.append(fmt.format(*self.header).rstrip())
        lines.append(fmt.format(*("-" * w for w in widths)).rstrip())
        lines += [fmt.format(*row).rstrip() for row in self.rows]
        if not self.rows:
            lines.append("(none)")
        return "\n".join(lines)


def fmt_bytes(n: float | int | None) -> str:
    """Human sizes in binary units, as the limits are given."""
    if n is None:
        return ""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t is not None else ""


def elapsed(record: JobRecord, now: float | None = None) -> float | None:
    """Seconds a job has run (or ran), from its record."""
    start = record.started_at or record.created_at
    if start is None:
        return None
    end = record.ended_at or (now if now is not None else time.time())
    return max(0.0, end - start)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return ""
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def usage_text(record: JobRecord) -> str:
    """CPU seconds and peak memory, once the agent reports them."""
    parts = []
    if record.usage.cpu_s is not None:
        parts.append(f"cpu {record.usage.cpu_s:.2f}s")
    if record.usage.memory_peak_bytes is not None:
        parts.append(f"mem peak {fmt_bytes(record.usage.memory_peak_bytes)}")
    return ", ".join(parts)


def ended_text(record: JobRecord) -> str:
    if not record.finished:
        return ""
    bits = [record.reason] if record.reason else []
    if record.exit_code is not None:
        bits.append(f"exit {record.exit_code}")
    if record.signal:
        bits.append(f"signal {record.signal}")
    return ", ".join(bits)


def jobs_table(jobs: Sequence[JobRecord], title: str = "joblet jobs") -> Table:
    rows = [[j.id, j.type, j.status.value, ended_text(j) or waiting_text(j), j.runtime or "base",
             fmt_time(j.created_at), fmt_seconds(elapsed(j)), usage_text(j)] for j in jobs]
    header = ["id", "type", "status", "ended", "runtime", "created", "elapsed", "usage"]
    if any(j.extra.get("node") or j.extra.get("cluster") for j in jobs):  # an agent that places jobs
        header += ["node", "cluster job", "devices"]
        for row, j in zip(rows, jobs):
            row += placement_cells(j)
    return Table(header, rows, title)


def waiting_text(record: JobRecord) -> str:
    """Why a queued job waits (a cluster scheduler's reason), while it is PENDING."""
    return record.message or "" if record.status.value == "PENDING" else ""


def placement_cells(record: JobRecord) -> list[str]:
    """Node, scheduler and job id there, and the devices it got (GPUs) of a cluster job."""
    cluster = record.extra.get("cluster") or {}
    job = f"{cluster.get('engine', '')} {cluster.get('job_id', '')}".strip() if isinstance(cluster, dict) else ""
    devices = cluster.get("devices") if isinstance(cluster, dict) else None
    return [str(record.extra.get("node") or ""), job, ", ".join(map(str, devices or []))]


def record_table(record: JobRecord) -> Table:
    """One job record as field/value rows."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "extra"}
    rows: list[list[Any]] = []
    for key, value in {**fields, **record.extra}.items():
        if key in ("created_at", "started_at", "ended_at"):
            value = fmt_time(value)
        elif key == "usage":
            value = usage_text(record)
        elif isinstance(value, Enum):
            value = value.value
        elif dataclasses.is_dataclass(value):
            value = _compact(to_json(value))
        elif isinstance(value, (dict, list)):
            value = _compact(value)
        rows.append([key, value])
    return Table(["field", "value"], rows, f"joblet job {record.id}")


def runtimes_table(runtimes: Sequence[RuntimeInfo]) -> Table:
    """One row per runtime; `built` is when (the agent's `built_at`), the build job's id is `build`."""
    described = []
    for rt in runtimes:
        row = to_json(rt)
        built_at = row.pop("built_at", None)
        if built_at is not None:
            row["build"] = row.pop("built", None)
            row["built"] = fmt_time(built_at)
        described.append(row)
    keys: list[str] = ["name"]
    for rt in described:
        keys += [k for k, v in rt.items() if k not in keys and not isinstance(v, (dict, list))]
    return Table(keys, [[rt.get(k) for k in keys] for rt in described], "joblet runtimes")


def mapping_table(data: dict[str, Any], title: str = "") -> Table:
    rows = [[k, _compact(v) if isinstance(v, (dict, list)) else v] for k, v in data.items()]
    return Table(["field", "value"], rows, title)


def _compact(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 200 else text[:197] + "..."

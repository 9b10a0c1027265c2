"""Timestamps inside a kernel (or an in-process shell) at each phase of a `%%joblet run` cell.

`install(shell)` wraps, in that process only, the functions a cell passes through and appends
`(label, time.perf_counter_ns())` to `MARKS`. On Linux `perf_counter` is CLOCK_MONOTONIC, one clock
for every process of the machine, so these marks line up with the benchmark's own (the execute
request sent, each iopub message received). Nothing here changes what a cell does.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

MARKS: list[tuple[str, int]] = []
LAST_JOB: list[str | None] = [None]   # the id of the last job a cell started
WALL_OFFSET_NS = time.time_ns() - time.perf_counter_ns()   # a record's wall times onto this clock


def mark(label: str) -> None:
    MARKS.append((label, time.perf_counter_ns()))


def take() -> dict[str, Any]:
    """The marks so far, the last job's id and this clock's offset to wall time; then a fresh start
    for the next cell."""
    out = {"marks": list(MARKS), "job": LAST_JOB[0], "offset": WALL_OFFSET_NS}
    MARKS.clear()
    LAST_JOB[0] = None
    return out


def _around(obj: Any, name: str, label: str) -> None:
    """`obj.name` marks `label:start` and `label:end` around each call."""
    inner = getattr(obj, name)

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(label + ":start")
        try:
            return inner(*args, **kwargs)
        finally:
            mark(label + ":end")

    setattr(obj, name, wrapper)


def _events(cls: Any) -> None:
    """Each event of a job's stream marks when the client parsed it (on the pump's thread)."""
    inner = cls.follow_events

    @functools.wraps(inner)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        for data in inner(self, *args, **kwargs):
            mark("event:" + str(data.get("type")) + ":" + str(data.get("status", "")))
            yield data

    cls.follow_events = wrapper


def _request(cls: Any) -> None:
    """Every HTTP call: its method and path, when it was sent and when its answer's head came."""
    inner = cls._request

    @functools.wraps(inner)
    def wrapper(self: Any, method: str, path: str, **kwargs: Any) -> Any:
        parts = path.split("/")
        what = f"http {method} " + "/".join(parts[:3] + ["{id}"] * (len(parts) > 3) + parts[4:])
        mark(what + ":start")
        try:
            return inner(self, method, path, **kwargs)
        finally:
            mark(what + ":end")

    cls._request = wrapper


def _run_job(cls: Any) -> None:
    inner = cls.run_job

    @functools.wraps(inner)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        created = inner(self, *args, **kwargs)
        LAST_JOB[0] = created.id
        return created

    cls.run_job = wrapper


def _kernel_handler(shell: Any) -> None:
    """ipykernel: when the execute_request reached the kernel's handler, and when it returned."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return
    inner = kernel.shell_handlers["execute_request"]

    async def handler(*args: Any, **kwargs: Any) -> Any:
        mark("kernel execute_request:start")
        try:
            return await inner(*args, **kwargs)
        finally:
            mark("kernel execute_request:end")

    kernel.shell_handlers["execute_request"] = handler


def _magic(shell: Any) -> None:
    table = shell.magics_manager.magics["cell"]
    inner: Callable[..., Any] = table["joblet"]

    def joblet(*args: Any, **kwargs: Any) -> Any:
        mark("magic:start")
        try:
            return inner(*args, **kwargs)
        finally:
            mark("magic:end")

    table["joblet"] = joblet


def install(shell: Any) -> None:
    """Wrap what a `%%joblet run` cell passes through (joblet_nb loaded in `shell` already)."""
    from joblet_nb.core import stream
    from joblet_nb.core.client import JobletClient
    from joblet_nb.ipython import magics, widgets

    _kernel_handler(shell)
    shell.events.register("pre_run_cell", lambda *_: mark("run_cell:start"))
    shell.events.register("post_run_cell", lambda *_: mark("run_cell:end"))
    _magic(shell)
    _around(magics, "build_request", "build_request")
    _around(magics.JobletMagics, "client", "settings+client")
    _request(JobletClient)
    _events(JobletClient)
    _run_job(JobletClient)
    _around(stream.JobFollower if hasattr(stream.JobFollower, "_write") else stream, "_write", "write")
    _around(stream.JobFollower, "_finish", "finish")
    _around(stream.JobFollower, "_flush_buffer", "flush_buffer")
    _around(magics.JobletMagics, "_deliver", "deliver")
    _around(widgets.StatusLine, "show", "status show")
    _around(widgets.StatusLine, "__init__", "status create")
    _around(widgets.StatusLine, "refresh_display", "status refresh")
    _around(widgets.StatusTracker, "stop", "tracker stop")

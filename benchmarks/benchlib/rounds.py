"""Timing rows interleaved round-robin (the order rotates every round, so machine noise and cache
effects hit every row alike), and the launcher row's per-phase breakdown."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from .common import log

Row = Callable[[dict[str, float]], None]
"""One run of a row; it may leave marks (seconds since its start) for a breakdown."""


def round_robin(fns: dict[str, Row], runs: int, warmup: int) -> tuple[dict[str, list[float]],
                                                                     dict[str, list[dict[str, float]]]]:
    """`warmup` uncounted runs per row, then `runs` rounds; wall-clock ms of every run, and its marks."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]({})
    times: dict[str, list[float]] = {name: [] for name in names}
    marks: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    t_start = time.monotonic()
    for i in range(runs):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            m: dict[str, float] = {}
            t0 = time.perf_counter()
            fns[name](m)
            times[name].append((time.perf_counter() - t0) * 1000)
            marks[name].append(m)
        if (i + 1) % max(1, runs // 10) == 0:
            log(f"  {i + 1}/{runs} rounds ({time.monotonic() - t_start:.0f} s)")
    return times, marks


def breakdown(marks: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Medians of the phases (ms). The launcher's marks are offsets from the start of its run, except
    cgroup_create and cgroup_remove (durations); a phase is the difference of two medians."""
    def med(name: str, key: str) -> float | None:
        vals = [m[key] * 1000 for m in marks.get(name, []) if key in m]
        return statistics.median(vals) if vals else None

    out: dict[str, dict[str, float]] = {}
    L = {k: med("launcher", k) for k in ("cgroup_create", "launch_start", "launch_end", "ev_started", "ev_running",
                                         "ev_exit", "ev_done", "eof", "cgroup_remove")}
    if all(v is not None for v in L.values()):
        out["launcher"] = {
            "cgroup open (the stage made it ahead and writes the limits)": L["cgroup_create"],
            "spec (jobspec.standard_spec) + mkdir job root": L["launch_start"] - L["cgroup_create"],
            "launch() call (spec JSON, memfd, sendmsg)": L["launch_end"] - L["launch_start"],
            "-> 'started' (a waiting stage takes the job: cgroup renamed + limited, mounts, fork init)":
                L["ev_started"] - L["launch_end"],
            "'started' -> 'running' (init: mounts, pivot_root, lo up, fork job)": L["ev_running"] - L["ev_started"],
            "'running' -> 'exit' (uid, seccomp, exec /bin/true, reap)": L["ev_exit"] - L["ev_running"],
            "'exit' -> 'done' (init exits, namespaces torn down, stage 1 copies /work out)": L["ev_done"] - L["ev_exit"],
            "'done' -> status EOF": L["eof"] - L["ev_done"],
            "cgroup remove": L["cgroup_remove"],
        }
    post = med("agent-http", "post")
    if post is not None:
        out["agent-http"] = {"POST /v1/jobs returns": post}
    start = med("service", "start")
    if start is not None:
        out["service"] = {"start() returns": start}
    return out

"""Timing rows interleaved round-robin (the order rotates every round, so machine noise and cache
effects hit every row alike), and the launcher row's per-phase breakdown."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from .common import log

Row = Callable[[dict[str, float]], None]
"""One run of a row; it may leave marks (seconds since its start) for a breakdown, and `timed_end`:
the moment its timing ends (the rest of the run is clean-up that nobody waits for)."""


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
            elapsed = time.perf_counter() - t0
            times[name].append(m.get("timed_end", elapsed) * 1000)  # a row may end its timing early
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
    launcher = _launcher_phases(lambda key: med("launcher", key))
    if launcher:
        out["launcher"] = launcher
    post = med("agent-http", "post")
    if post is not None:
        out["agent-http"] = {"POST /v1/jobs returns": post}
    start = med("service", "start")
    if start is not None:
        out["service"] = {"start() returns": start}
    return out


LAUNCHER_PHASES = (
    # (from, to, what happens in between); holder_* are the holder's own marks (outcome.json)
    (None, "launch_start", "spec (jobspec.standard_spec), state folder (a spare renamed, as JobStore.add)"),
    ("launch_start", "launch_end", "Launcher.hold(): spec JSON into a memfd, sendmsg to the launcher"),
    ("launch_end", "holder_came", "the launcher hands the job to a waiting stage, which reads the spec"),
    ("holder_came", "holder_taken", "take: log locked (the cgroup is renamed job-<id> after the init's spawn)"),
    ("holder_taken", "holder_root", "stage 1 root: limits written, mount namespace copied, private, root tmpfs"),
    ("holder_root", "holder_root_built", "holder: job context checked (the root is jnb-init's)"),
    ("holder_root_built", "holder_forked", "holder: pipes made, plan (root records) sealed, jnb-init spawned"),
    ("holder_forked", "holder_running",
     "jnb-init: root built (binds, /etc, /work uploads, /dev), /proc, hostname, pivot_root, lo, cgroupns, "
     "caps, job forked; cgroup renamed, holder.json, socket"),
    ("holder_running", "holder_init_ended", "job: uid, Landlock, seccomp, exec true, exit; jnb-init reaps, exits"),
    ("holder_init_ended", "holder_drained", "holder: the job's pipes drained to EOF"),
    ("holder_drained", "holder_usage", "holder: usage and OOM read from the cgroup"),
    ("holder_usage", "holder_work_copied", "holder: /work copied out"),
    ("holder_work_copied", "holder_logged", "holder: last events into the log"),
    ("holder_logged", "ended", "holder: outcome.json written, log let go; `ended` read here (timing ends)"),
    ("ended", "eof", "after the end: outcome.json fsync, the holder exits (namespaces torn down); EOF"),
)


def _launcher_phases(med: Callable[[str], float | None]) -> dict[str, float]:
    """The launcher row's phases (ms, differences of medians of offsets), and the clean-up after it."""
    out: dict[str, float] = {}
    for start, end, what in LAUNCHER_PHASES:
        a, b = (0.0 if start is None else med(start)), med(end)
        if a is not None and b is not None:
            out[what] = b - a
    for key, what in (("cgroup_remove", "after EOF: cgroup removed"),
                      ("folders_remove", "after EOF: state folder removed")):
        value = med(key)
        if value is not None:
            out[what] = value
    return out

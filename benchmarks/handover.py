#!/usr/bin/env python3
"""The launcher row of goals.py (`/bin/true` through the sandbox code), this checkout's launcher
against another checkout's (`--compare`), in one run: both launchers live side by side in this
process's in-process agent and take turns, round-robin, so both see the same load.

    .venv/bin/python benchmarks/handover.py --compare /work/main [--runs 60] [--warmup 5]   (as root)

The other checkout's launcher process (and so its stages and holders) runs that checkout's code;
the agent's side of the launcher is this checkout's (it hands a job to a lent stage where the
launcher lends one, through the launcher otherwise, as the other checkout's agent does). Prints
each row's median and p90 and the phases of goals.py's breakdown side by side."""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, when run from anywhere

from benchlib.common import command_line, git_head, log, run_bench, safely, summary  # noqa: E402
from benchlib.inprocess import InProcess  # noqa: E402
from benchlib.rounds import breakdown, round_robin  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", required=True, help="another checkout with its own .venv (e.g. /work/main)")
    p.add_argument("--runs", type=int, default=60, help="rounds (default %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured runs per row (default %(default)s)")
    return p.parse_args()


def _started(cleanup: contextlib.ExitStack, name: str, python: str | None = None) -> InProcess:
    inproc = InProcess()
    cleanup.callback(safely(name, inproc.remove))
    executable = sys.executable
    sys.executable = python or executable  # the launcher is started with sys.executable
    try:
        inproc.start()
    finally:
        sys.executable = executable
    return inproc


def _counted(run: Callable[[dict[str, float]], None], failed: list[str]) -> Callable[[dict[str, float]], None]:
    """`run`, whose failure is recorded (and said) instead of ending the benchmark."""
    def counted(marks: dict[str, float]) -> None:
        try:
            run(marks)
        except Exception as exc:  # noqa: BLE001 - counted, reported
            failed.append(repr(exc))
            marks["failed"] = 1.0
            log(f"  a run failed: {exc!r}")
    return counted


def _bench(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    other = Path(args.compare).resolve()
    head = subprocess.run(["git", "-C", str(other), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    rows = {"this": _started(cleanup, "this"), other.name: _started(cleanup, other.name, str(other / ".venv/bin/python"))}
    log(f"{args.warmup} warm-up runs per row, then {args.runs} rounds, round-robin")
    failed: dict[str, list[str]] = {name: [] for name in rows}
    times, marks = round_robin({name: _counted(inproc.run_launcher, failed[name]) for name, inproc in rows.items()},
                               args.runs, args.warmup)
    for name in rows:  # a failed run has no figure
        times[name] = [t for t, m in zip(times[name], marks[name]) if "failed" not in m]
        marks[name] = [m for m in marks[name] if "failed" not in m]
    phases = {name: breakdown({"launcher": marks[name]}).get("launcher", {}) for name in rows}
    print(f"# {command_line()}  (this: {git_head()}, {other.name}: {head})")
    names = list(rows)
    print("| row | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for stat in ("median_ms", "p90_ms"):
        print(f"| lifecycle {stat[:-3]} (ms) | " + " | ".join(f"{summary(times[n])[stat]:.2f}" for n in names) + " |")
    for key, what in (("holder_came", "the stage has the job (from the run's start)"),
                      ("holder_taken", "the job is taken"), ("holder_forked", "jnb-init spawned"),
                      ("ended", "`ended` read (the timing's end)")):
        print(f"| {what}, median of each run's offset | "
              + " | ".join(f"{statistics.median(m[key] * 1000 for m in marks[n] if key in m):.2f}" for n in names)
              + " |")
    print(f"| failed runs | " + " | ".join(str(len(failed[n])) for n in names) + " |")
    for what in phases[names[0]]:
        print(f"| {what} | " + " | ".join(f"{phases[n].get(what, float('nan')):.2f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench("handover.py", lambda cleanup: _bench(parse_args(), cleanup)))

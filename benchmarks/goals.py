#!/usr/bin/env python3
"""Every goal of issue 11, each measured against its reference in one run on this machine.

    .venv/bin/python benchmarks/goals.py [--runs N] [--only SECTION ...]   (as root)

Sections (benchmarks/README.md says what each times and why its reference is the fair one):
  lifecycle  `/bin/true` through the sandbox code (`launcher`), over HTTP from POST to the exit
             event (`agent-http`), in-process through JobService (`service`, for the breakdown),
             against `bwrap` with the same namespaces and mounts; round-robin, medians
  cpu        CPU time per trivial job by component (agent, launcher, sandbox processes, client),
             against bwrap's CPU per run (a figure that other work on the machine disturbs little)
  burst      64 trivial jobs at once over HTTP, all must succeed, against 64 bwraps at once
  kernel     a trivial `%%joblet run` cell through a real ipykernel, against python3 in bwrap run
             from the same kernel
  pss        PSS per running job over the agent's whole tree, against bwrap per sandbox (and the
             same for cell-like jobs, with uploads in a kept /work)
  relay      1 GB of a job's stdout to the notebook client, every byte checked, against a bwrap pipe
  idle       the agent's RSS when idle, after every other section

Everything made here (agent roots /tmp/jnb-bench-*, cgroups, kernels, processes) is removed at the
end, also on Ctrl-C, SIGTERM or failure. Results: stdout and benchmarks/results/goals.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, when run from anywhere

from benchlib import burst, cpu, kernel, pss, relay  # noqa: E402
from benchlib.agent import HttpAgent  # noqa: E402
from benchlib.bwrap import BWRAP, run_bwrap  # noqa: E402
from benchlib.common import (RESULTS, command_line, git_head, host_facts, log, run_bench, safely,  # noqa: E402
                             summary)
from benchlib.inprocess import InProcess  # noqa: E402
from benchlib.report import goal_rows, print_report  # noqa: E402
from benchlib.rounds import breakdown, round_robin  # noqa: E402

SECTIONS = ["lifecycle", "cpu", "burst", "kernel", "pss", "relay", "idle"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, metavar="SECTION",
                   help=f"run only these sections ({', '.join(SECTIONS)})")
    p.add_argument("--runs", type=int, default=100, help="lifecycle rounds (default %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured lifecycle runs per row (default %(default)s)")
    p.add_argument("--cpu-jobs", type=int, default=50, help="jobs per CPU block (default %(default)s)")
    p.add_argument("--cpu-rounds", type=int, default=3, help="CPU blocks (default %(default)s)")
    p.add_argument("--burst-jobs", type=int, default=64, help="jobs at once (default %(default)s)")
    p.add_argument("--burst-rounds", type=int, default=5, help="burst rounds (default %(default)s)")
    p.add_argument("--cell-runs", type=int, default=30, help="kernel cells per row (default %(default)s)")
    p.add_argument("--pss-jobs", type=int, default=16, help="sleep jobs for the PSS figure (default %(default)s)")
    p.add_argument("--relay-mb", type=int, default=1000, help="MB of stdout per relay run (default %(default)s)")
    p.add_argument("--relay-rounds", type=int, default=3, help="relay rounds (default %(default)s)")
    p.add_argument("--json", default=str(RESULTS / "goals.json"), help="where to write the results")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    return run_bench("goals.py", lambda cleanup: _bench(args, cleanup))


def _bench(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    load_before = os.getloadavg()
    log(f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; starting an agent")
    agent = HttpAgent({"max_output_mb": args.relay_mb + 64,
                       "quotas": {"live_jobs": 4 * args.burst_jobs, "live_jobs_per_user": 4 * args.burst_jobs}})
    cleanup.callback(safely("agent", agent.remove))
    agent.start()
    agent.run_true({})  # lazy imports and first-use costs are paid before anything is measured
    time.sleep(0.5)
    results: dict[str, Any] = {"idle_first": agent.memory()}
    sections = set(args.only)
    if "lifecycle" in sections:
        results["lifecycle"] = _lifecycle(agent, args, cleanup)
    if "cpu" in sections:
        log(f"cpu: {args.cpu_rounds} blocks of {args.cpu_jobs} jobs over HTTP and {args.cpu_jobs} bwraps")
        results["cpu"] = cpu.measure(agent, args.cpu_jobs, args.cpu_rounds)
    if "burst" in sections:
        log(f"burst: {args.burst_rounds} rounds of {args.burst_jobs} jobs at once, agent and bwrap")
        results["burst"] = burst.measure(agent, args.burst_jobs, args.burst_rounds)
    if "kernel" in sections:
        results["kernel"] = _kernel(agent, args, cleanup)
    if "pss" in sections:
        log(f"pss: {args.pss_jobs} sleep jobs through the agent, then {args.pss_jobs} bwraps")
        time.sleep(0.5)
        results["pss"] = {"agent": pss.agent_jobs(agent, args.pss_jobs), "bwrap": pss.bwrap_sandboxes(args.pss_jobs),
                          "cells": pss.agent_jobs(agent, args.pss_jobs, uploads=pss.CELL_UPLOADS)}
    if "relay" in sections:
        log(f"relay: {args.relay_rounds} rounds of {args.relay_mb} MB of stdout, three readers")
        results["relay"] = relay.measure(agent, args.relay_mb * 1_000_000, args.relay_rounds)
    if "idle" in sections:
        time.sleep(1)
        results["idle"] = agent.memory()
    results["load_average"] = {"before": load_before, "after": os.getloadavg()}
    cmd = command_line()
    rows = goal_rows(results)
    print_report(rows, results, cmd)
    _write(Path(args.json), args, cmd, rows, results)
    return 0


def _lifecycle(agent: HttpAgent, args: argparse.Namespace, cleanup: contextlib.ExitStack) -> dict[str, Any]:
    inproc = InProcess()
    cleanup.callback(safely("in-process", inproc.remove))
    inproc.start()
    log(f"lifecycle: {args.warmup} warm-up runs per row, then {args.runs} rounds, round-robin")
    fns = {"agent-http": agent.run_true, "service": inproc.run_service, "launcher": inproc.run_launcher,
           "bwrap": run_bwrap}
    times, marks = round_robin(fns, args.runs, args.warmup)
    stats = {name: summary(values) for name, values in times.items()}
    return {"rows": stats, "breakdown_ms": breakdown(marks), "samples_ms": times,
            "cgroup": inproc.driver.version, "bwrap_command": shlex.join(BWRAP)}


def _kernel(agent: HttpAgent, args: argparse.Namespace, cleanup: contextlib.ExitStack) -> dict[str, Any]:
    log(f"kernel: a real ipykernel, {args.cell_runs} cells per row, round-robin")
    k = kernel.Kernel(agent)
    cleanup.callback(safely("kernel", k.stop))
    k.start()
    times = kernel.measure(k, args.cell_runs, warmup=3)
    k.stop()
    return {"rows": {name: summary(v) for name, v in times.items()}, "samples_ms": times,
            "cells": kernel.CELLS, "reference_command": shlex.join(kernel.reference_command(Path("DIR")))}


def _write(path: Path, args: argparse.Namespace, cmd: str, rows: list[dict[str, Any]],
           results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    driver = results.get("lifecycle", {}).get("cgroup", "?")
    path.write_text(json.dumps({
        "command": cmd, "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_head(), "host": host_facts(driver), "args": vars(args), "goals": rows, "results": results,
    }, indent=1, default=str) + "\n")
    log(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())

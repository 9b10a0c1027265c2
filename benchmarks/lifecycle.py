#!/usr/bin/env python3
"""The full lifecycle of `/bin/true`, five ways side by side, plus the agent's memory.

    .venv/bin/python benchmarks/lifecycle.py [--runs N]     (as root; N defaults to 200)

Rows, measured in one run and interleaved round-robin (the order rotates every round, so machine
noise and cache effects hit every row alike):

  agent-http     a real `joblet-agent serve` on a free loopback port with its own temporary root:
                 POST /v1/jobs, then GET /v1/jobs/{id}/events?follow=true until the exit event.
                 One keep-alive http.client connection (a lean client: this measures the agent).
                 Its jobs run on the minimal base image (the default; it builds it before it serves).
  agent-http-host the same with `base: host` in its config: jobs see the host's /usr.
  service        the agent's JobService driven in an asyncio loop in this process, no HTTP:
                 start() then wait() (validation, records and event log on disk, cgroup, launch,
                 status events, finalize). The difference to agent-http is the HTTP layer.
  launcher       the agent's sandbox code alone: a SandboxSpec built exactly as JobService builds
                 it, Launcher.hold() (a stage forked ahead of time, already in its cgroup, takes
                 the job and becomes its holder), its control connection read until it
                 closes, the job's cgroup removed.
  bwrap          bubblewrap with the same namespaces and mounts (see BWRAP below); it makes no
                 cgroup, writes no /etc files, runs no seccomp filter and copies nothing out.
  bwrap-nouserns the same without --unshare-user/--uid/--gid: bwrap needs a user namespace to
                 change uid, the agent does not use one (it setuid()s), so this is the variant
                 with the agent's exact namespace set (but the command runs as uid 0, caps dropped).
  plain          subprocess.run(["/bin/true"]).

Everything made here (agent roots `jnb-bench-*`, cgroups, processes) is removed at the end, also
on Ctrl-C, SIGTERM or failure. Results go to stdout and to benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, when run from anywhere

from benchlib.agent import HttpAgent  # noqa: E402
from benchlib.bwrap import BWRAP, BWRAP_NOUSERNS, run_bwrap, run_bwrap_nouserns, run_plain  # noqa: E402
from benchlib.common import (PREFIX, RESULTS, command_line, fmt_ratio, git_head, host_facts, log,  # noqa: E402
                             run_bench, safely, summary)
from benchlib.inprocess import InProcess  # noqa: E402
from benchlib.rounds import breakdown as _breakdown, round_robin  # noqa: E402

CONCURRENT = 16
ROWS = ["agent-http", "agent-http-host", "service", "launcher", "bwrap", "bwrap-nouserns", "plain"]
DESCRIBE = {
    "agent-http": "agent over HTTP (POST /v1/jobs + follow events to exit), minimal base image",
    "agent-http-host": "the same, base: host (the host's /usr)",
    "service": "JobService in-process, no HTTP (start + wait)",
    "launcher": "sandbox code only (spec, cgroup, Launcher.hold, holder done, cgroup rm)",
    "bwrap": "bwrap, same namespaces + mounts, --unshare-user --uid 1000",
    "bwrap-nouserns": "bwrap, same namespaces + mounts, no userns (uid 0, caps dropped)",
    "plain": "subprocess.run([\"/bin/true\"])",
}


def measure_concurrent(agent: HttpAgent) -> tuple[dict[str, Any], float]:
    """Start CONCURRENT `sleep 2` jobs, sample memory once all run, wait for all to end."""
    t0 = time.perf_counter()
    ids = [agent.submit(["sleep", "2"]) for _ in range(CONCURRENT)]
    deadline = time.monotonic() + 30
    while True:
        states = [agent.status(i) for i in ids]
        if all(s == "RUNNING" for s in states):
            break
        if any(s not in ("PENDING", "RUNNING") for s in states) or time.monotonic() > deadline:
            raise RuntimeError(f"the {CONCURRENT} sleep jobs did not all reach RUNNING: {states}")
        time.sleep(0.02)
    all_running = time.perf_counter() - t0
    samples = []
    for _ in range(3):
        samples.append(agent.memory())
        time.sleep(0.1)
    for i in ids:
        end = agent.follow(i)
        if end.get("status") != "COMPLETED":
            raise RuntimeError(f"sleep job {i}: {end}")
    return max(samples, key=lambda s: s["tree_pss_mb"]), all_running


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="measured runs per row (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured runs per row first (default %(default)s)")
    parser.add_argument("--json", default=str(RESULTS / "latest.json"),
                        help="where to write the results (default %(default)s)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return run_bench("lifecycle.py", lambda cleanup: _bench(args, cleanup))


def _bench(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    runs = args.runs
    log(f"starting an agent and the in-process sandbox code (roots {tempfile.gettempdir()}/{PREFIX}*)")
    agent = HttpAgent()
    cleanup.callback(safely("agent", agent.remove))
    agent.start()
    host_agent = HttpAgent({"base": "host"})
    cleanup.callback(safely("agent (base: host)", host_agent.remove))
    host_agent.start()
    inproc = InProcess()
    cleanup.callback(safely("in-process", inproc.remove))
    inproc.start()

    fns = {"agent-http": agent.run_true, "agent-http-host": host_agent.run_true, "service": inproc.run_service, "launcher": inproc.run_launcher,
           "bwrap": run_bwrap, "bwrap-nouserns": run_bwrap_nouserns, "plain": run_plain}

    # One job first so that lazy imports and first-use costs are paid, then idle memory.
    agent.run_true({})
    host_agent.run_true({})
    time.sleep(0.5)
    mem_idle = agent.memory()

    log(f"warm-up: {args.warmup} runs per row; measuring: {runs} rounds of {len(ROWS)} rows, round-robin")
    times, marks = round_robin({name: fns[name] for name in ROWS}, runs, args.warmup)

    time.sleep(0.5)
    mem_idle_after = agent.memory()
    log(f"memory: {CONCURRENT} concurrent `sleep 2` jobs")
    mem_busy, all_running_s = measure_concurrent(agent)

    stats = {name: summary(times[name]) for name in ROWS}
    base_bwrap = stats["bwrap"]["median_ms"]
    base_plain = stats["plain"]["median_ms"]
    for name in ROWS:
        stats[name]["x_bwrap"] = stats[name]["median_ms"] / base_bwrap
        stats[name]["x_plain"] = stats[name]["median_ms"] / base_plain
        stats[name]["what"] = DESCRIBE[name]

    phases = _breakdown(marks)
    cmd = command_line()
    _print_report(stats, phases, mem_idle, mem_idle_after, mem_busy, all_running_s, runs, cmd)

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": cmd,
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_head(), "host": host_facts(inproc.driver.version), "load_average": os.getloadavg(),
        "runs": runs, "warmup": args.warmup, "order": "round-robin, rotating start",
        "bwrap_command": shlex.join(BWRAP), "bwrap_nouserns_command": shlex.join(BWRAP_NOUSERNS),
        "rows": stats, "breakdown_ms": phases,
        "memory": {"idle": mem_idle, "idle_after_runs": mem_idle_after,
                   f"running_{CONCURRENT}": mem_busy, f"seconds_until_{CONCURRENT}_running": all_running_s},
        "samples_ms": times,
    }, indent=1) + "\n")
    log(f"wrote {out}")
    return 0


def _print_report(stats: dict[str, dict[str, Any]], breakdown: dict[str, dict[str, float]],
                  idle: dict[str, Any], idle_after: dict[str, Any], busy: dict[str, Any], all_running_s: float,
                  runs: int, cmd: str) -> None:
    print()
    print(f"Lifecycle of /bin/true, {runs} runs per row, interleaved round-robin")
    print(f"{'row':<16} {'median ms':>10} {'p90 ms':>8} {'x bwrap':>8} {'x plain':>8}  what")
    for name in ROWS:
        s = stats[name]
        print(f"{name:<16} {s['median_ms']:>10.2f} {s['p90_ms']:>8.2f} {fmt_ratio(s['x_bwrap']):>8} "
              f"{fmt_ratio(s['x_plain']):>8}  {s['what']}")
    print()
    print("Where the time goes (medians, ms)")
    for row, phases in breakdown.items():
        for phase, ms in phases.items():
            print(f"  {row:<11} {phase:<78} {ms:7.2f}")
    print()
    print("Agent memory (agent process tree: agent, launcher, and per job stage 1 + init + the job)")
    for label, m in (("idle", idle), (f"idle after {runs} runs", idle_after), (f"{CONCURRENT} jobs running", busy)):
        print(f"  {label:<22} procs {m['processes']:>3}  agent+launcher RSS {m['agent_launcher_rss_mb']:6.1f} MB "
              f"PSS {m['agent_launcher_pss_mb']:6.1f} MB   whole tree RSS {m['tree_rss_mb']:7.1f} MB "
              f"PSS {m['tree_pss_mb']:6.1f} MB")
    print(f"  ({CONCURRENT} `sleep 2` jobs were all RUNNING {all_running_s * 1000:.0f} ms after the first POST)")
    print()
    print("Markdown (for the README):")
    print()
    print("| path | median ms | p90 ms | x bwrap | x plain exec |")
    print("|---|---:|---:|---:|---:|")
    for name in ROWS:
        s = stats[name]
        print(f"| {name}: {s['what']} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} | {fmt_ratio(s['x_bwrap'])} | "
              f"{fmt_ratio(s['x_plain'])} |")
    print()
    print("| agent memory | processes | agent+launcher RSS / PSS MB | whole tree RSS / PSS MB |")
    print("|---|---:|---:|---:|")
    for label, m in (("idle (after 1 job)", idle), (f"idle after {runs} runs per row", idle_after),
                     (f"{CONCURRENT} `sleep 2` jobs running", busy)):
        print(f"| {label} | {m['processes']} | {m['agent_launcher_rss_mb']:.1f} / {m['agent_launcher_pss_mb']:.1f} | "
              f"{m['tree_rss_mb']:.1f} / {m['tree_pss_mb']:.1f} |")
    print()
    print(f"Command: `{cmd}`")


if __name__ == "__main__":
    sys.exit(main())

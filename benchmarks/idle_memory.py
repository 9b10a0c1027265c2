#!/usr/bin/env python3
"""The agent's idle RSS after many finished jobs that nobody deletes, this checkout against another
(`--compare`), both agents running at once and fed alternately, so the machine's load is the same.

    .venv/bin/python benchmarks/idle_memory.py --compare /work/main [--rounds 4] [--step 100] [--burst 64]

Each agent gets the same `/bin/true` jobs over HTTP, in rounds of `--step` jobs one after another
and `--burst` at once (as goals.py's lifecycle, cpu and burst sections give it: a burst's peak
leaves the heap fragmented around what is kept); after each round both idle for `--settle` s and
their RSS is read. The goal (issue 11) is the idle RSS <= 80 MB after goals.py's sections, which
leave about 600 jobs undeleted."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, when run from anywhere

from benchlib import burst  # noqa: E402
from benchlib.agent import HttpAgent  # noqa: E402
from benchlib.common import command_line, git_head, log, run_bench, safely  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", required=True, help="another checkout with its own .venv (e.g. /work/main)")
    p.add_argument("--rounds", type=int, default=4, help="rounds, a reading after each (default %(default)s)")
    p.add_argument("--step", type=int, default=100, help="jobs one after another a round (default %(default)s)")
    p.add_argument("--burst", type=int, default=64, help="jobs at once a round (default %(default)s)")
    p.add_argument("--settle", type=float, default=2.0, help="idle seconds before a reading (default %(default)s)")
    return p.parse_args()


def _head(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def _bench(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    other = Path(args.compare).resolve()
    config = {"quotas": {"live_jobs": 4 * args.burst, "live_jobs_per_user": 4 * args.burst}}
    agents = {"this": HttpAgent(config), other.name: HttpAgent(config, python=str(other / ".venv/bin/python"))}
    for name, agent in agents.items():
        cleanup.callback(safely(name, agent.remove))
        agent.start()
        agent.run_true({})
    time.sleep(args.settle)
    rows = [(0, {name: a.memory()["agent_rss_mb"] for name, a in agents.items()})]
    done = 0
    for _ in range(args.rounds):
        for _ in range(args.step):
            for agent in agents.values():
                agent.run_true({})
        for agent in agents.values():
            failed = burst.failures(burst.agent_burst(agent, args.burst)[1]) if args.burst else []
            if failed:
                raise RuntimeError(f"jobs of a burst failed: {failed[:3]}")
        done += args.step + args.burst
        time.sleep(args.settle)
        rows.append((done, {name: a.memory()["agent_rss_mb"] for name, a in agents.items()}))
        log(f"  {done} jobs: " + ", ".join(f"{k} {v:.1f} MB" for k, v in rows[-1][1].items()))
    print(f"# {command_line()}  (this: {git_head()}, {other.name}: {_head(other)})")
    names = list(agents)
    print("| kept jobs | " + " | ".join(f"{n} RSS MB" for n in names) + " |")
    print("|---:|" + "---:|" * len(names))
    for count, mem in rows:
        print(f"| {count} | " + " | ".join(f"{mem[n]:.1f}" for n in names) + " |")
    for n in names:
        slope = (rows[-1][1][n] - rows[0][1][n]) * 1024 / max(1, rows[-1][0])
        print(f"{n}: {slope:.2f} KB of RSS per kept job")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench("idle_memory.py", lambda cleanup: _bench(parse_args(), cleanup)))

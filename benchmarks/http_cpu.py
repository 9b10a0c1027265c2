#!/usr/bin/env python3
"""The agent's CPU per HTTP request, per trivial job and per byte it sends: its HTTP server's share
of issue 11, and two checkouts side by side.

    .venv/bin/python benchmarks/http_cpu.py [--compare OTHER_PYTHON] [--blocks 20] [--mb 200] [--json PATH]

(as root). Rows, each on one keep-alive `http.client` connection to a real agent of its own:
`GET /v1/health` (no token: the HTTP server and the router alone), `GET /v1/jobs/{id}` (token check
and a record), a trivial job (`POST /v1/jobs` of `true` and its whole event stream), and the events
of a finished job with about `--mb` MB of stdout (`follow=false`: the log read and the HTTP framing
of large chunks). The agent's CPU is its threads' time on CPU (/proc/PID/task/*/schedstat, in ns).
With `--compare`, a second agent runs from another checkout's interpreter at the same time and the
two take turns in small blocks, so both see the same load: on a shared machine that is the only
fair comparison. Everything made here is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, when run from anywhere

from benchlib.agent import HttpAgent  # noqa: E402
from benchlib.common import RESULTS, command_line, log, run_bench, safely  # noqa: E402

PER_BLOCK = {"GET /v1/health": 100, "GET /v1/jobs/{id}": 100, "trivial job": 5}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", help="the interpreter of another checkout's .venv: its agent runs beside this one")
    p.add_argument("--blocks", type=int, default=20, help="blocks per request row and agent (default %(default)s)")
    p.add_argument("--mb", type=int, default=200, help="MB of stdout of the events row's job")
    p.add_argument("--event-rounds", type=int, default=3, help="reads of that job's events per agent")
    p.add_argument("--json", default=str(RESULTS / "http_cpu.json"), help="where to write the results")
    return p.parse_args()


def cpu_ns(pid: int) -> int:
    """Time on CPU of all the threads of `pid` (those alive now), in ns."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total


class Subject:
    """One agent, its finished large job, and the CPU and wall time each row took on it."""

    def __init__(self, name: str, python: str | None, mb: int) -> None:
        self.name, self.mb = name, mb
        self.agent = HttpAgent({"max_output_mb": mb + 64}, python=python)
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self.job_id, self.stdout_bytes = "", 0

    def prepare(self) -> None:
        self.agent.start()
        self.agent.run_true({})
        n = self.mb * 1_000_000 // 8
        self.stdout_bytes = sum(len(str(i)) + 1 for i in range(1, n + 1))
        self.job_id = self.agent.submit(["seq", "1", str(n)], limits={"timeout_s": 600})
        assert self.agent.follow(self.job_id).get("status") == "COMPLETED"

    def timed(self, row: str, n: int, fn: Callable[[], None]) -> None:
        assert self.agent.proc is not None
        pid = self.agent.proc.pid
        cpu0, t0 = cpu_ns(pid), time.perf_counter()
        for _ in range(n):
            fn()
        self.wall[row] = self.wall.get(row, 0.0) + time.perf_counter() - t0
        self.cpu[row] = self.cpu.get(row, 0.0) + (cpu_ns(pid) - cpu0) / 1e9
        self.count[row] = self.count.get(row, 0) + n

    def get(self, path: str) -> Callable[[], None]:
        def call() -> None:
            status, _ = self.agent.request("GET", path)
            assert status == 200, status
        return call

    def events(self) -> None:
        conn = self.agent.connection()
        try:
            conn.request("GET", f"/v1/jobs/{self.job_id}/events?follow=false",
                         headers={"Authorization": f"Bearer {self.agent.token}"})
            resp = conn.getresponse()
            got = 0
            while chunk := resp.read1(1 << 20):
                got += len(chunk)
        finally:
            conn.close()
        assert resp.status == 200 and got > self.stdout_bytes, (resp.status, got)

    def block(self, row: str) -> None:
        n = PER_BLOCK[row]
        if row == "GET /v1/health":
            self.timed(row, n, self.get("/v1/health"))
        elif row == "GET /v1/jobs/{id}":
            self.timed(row, n, self.get(f"/v1/jobs/{self.job_id}"))
        else:
            self.timed(row, n, lambda: self.agent.run_true({}))

    def figures(self) -> dict[str, dict[str, float]]:
        out = {row: {"agent_cpu_us": self.cpu[row] / self.count[row] * 1e6,
                     "wall_us": self.wall[row] / self.count[row] * 1e6} for row in PER_BLOCK}
        gb = self.stdout_bytes * self.count["events"] / 1e9
        out["events, finished log"] = {"agent_cpu_s_per_gb": self.cpu["events"] / gb,
                                       "mb_per_s": gb * 1000 / self.wall["events"]}
        return out


def _bench(args: argparse.Namespace, cleanup: Any) -> int:
    load_before = os.getloadavg()
    subjects = [Subject("this", None, args.mb)]
    if args.compare:
        subjects.append(Subject("other", args.compare, args.mb))
    for s in subjects:
        cleanup.callback(safely(f"agent {s.name}", s.agent.remove))
        s.prepare()
        for row in PER_BLOCK:  # warm-up, not counted
            s.block(row)
        s.cpu, s.wall, s.count = {}, {}, {}
    for i in range(args.blocks):
        if i % 5 == 0:
            log(f"block {i + 1}/{args.blocks}")
        for row in PER_BLOCK:
            for s in subjects if i % 2 == 0 else subjects[::-1]:
                s.block(row)
    for i in range(args.event_rounds):
        for s in subjects if i % 2 == 0 else subjects[::-1]:
            s.timed("events", 1, s.events)
    out = {"subjects": {s.name: {"python": str(s.agent.argv[0]), "rows": s.figures()} for s in subjects},
           "command": command_line(), "load_average": {"before": load_before, "after": os.getloadavg()}}
    _print(out)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return 0


def _print(out: dict[str, Any]) -> None:
    for name, subject in out["subjects"].items():
        print(f"\n{name}: agent from {subject['python']}")
        for row, figures in subject["rows"].items():
            print(f"  {row:24} " + "  ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    la = out["load_average"]
    print(f"\nLoad average (1/5/15 min) before {' '.join(f'{x:.2f}' for x in la['before'])}, "
          f"after {' '.join(f'{x:.2f}' for x in la['after'])} on {os.cpu_count()} CPUs")
    print(f"Command: `{out['command']}`")


def main() -> int:
    args = parse_args()
    return run_bench("http_cpu.py", lambda cleanup: _bench(args, cleanup))


if __name__ == "__main__":
    sys.exit(main())

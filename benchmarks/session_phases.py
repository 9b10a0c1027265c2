"""Where a warm session cell's time goes, phase by phase, without a kernel.

Run as root: `.venv/bin/python benchmarks/session_phases.py [--runs N] [--warmup W]`. It starts its
own agent with benchmarks/phaseprobe/sitecustomize.py on its PYTHONPATH (the agent, its launcher
and the holders mark phases on CLOCK_MONOTONIC into one file), opens one session and its event
stream (`follow`), then sends `print('hi')` cells one at a time from a lean HTTP client, marking
the POST, its answer and the arrival of the cell's `cell_end`. Prints the median time of each
mark after the client's POST, over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from agentproc import running_agent  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    marks_file = Path(tempfile.mkdtemp(prefix="jnb-phases-")) / "marks"
    env = {"JNB_PHASES": str(marks_file),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "phaseprobe"), os.environ.get("PYTHONPATH")]))}
    try:
        with running_agent(env=env) as agent:
            rows = run_cells(agent, args.runs, args.warmup, marks_file)
    finally:
        marks_file.unlink(missing_ok=True)
        marks_file.parent.rmdir()
    print(report(rows, args.runs))
    return 0


def run_cells(agent, runs: int, warmup: int, marks_file: Path) -> list[dict[str, float]]:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {agent.user_token}"
    sid = http.post(f"{agent.url}/v1/sessions", json={}).json()["id"]
    ends: dict[int, float] = {}
    got = threading.Condition()

    def follow() -> None:
        stream = requests.Session()
        stream.headers["Authorization"] = f"Bearer {agent.user_token}"
        with stream.get(f"{agent.url}/v1/sessions/{sid}/events", params={"follow": "true"}, stream=True) as r:
            for line in r.iter_lines():
                event = json.loads(line)
                if event["type"] == "cell_end":
                    with got:
                        ends[event["cell"]] = time.monotonic_ns()
                        got.notify_all()
                if event["type"] == "exit":
                    return

    threading.Thread(target=follow, daemon=True).start()
    rows = []
    try:
        for i in range(warmup + runs):
            time.sleep(0.02)
            with open(marks_file, "r+") as f:
                f.truncate(0)
            start = time.monotonic_ns()
            reply = http.post(f"{agent.url}/v1/sessions/{sid}/cells", json={"code": "print('hi')"})
            assert reply.status_code == 201, reply.text
            cell = reply.json()["cell"]
            answered = time.monotonic_ns()
            with got:
                got.wait_for(lambda: cell in ends, timeout=10)
            if i < warmup:
                continue
            row = {"client.post_answered": answered, "client.cell_end": ends[cell]}
            for line in marks_file.read_text().splitlines():
                name, _, ns = line.partition(" ")
                row.setdefault(name, int(ns))  # the first of each mark in this cell
            rows.append({k: (v - start) / 1e6 for k, v in row.items()})
    finally:
        http.delete(f"{agent.url}/v1/sessions/{sid}")
    return rows


def report(rows: list[dict[str, float]], runs: int) -> str:
    names = sorted({k for r in rows for k in r}, key=lambda k: statistics.median(r[k] for r in rows if k in r))
    lines = [f"| mark (first in the cell) | median ms after the client's POST | cells with it of {runs} |",
             "|---|---|---|"]
    for name in names:
        values = [r[name] for r in rows if name in r]
        lines.append(f"| {name} | {statistics.median(values):.2f} | {len(values)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

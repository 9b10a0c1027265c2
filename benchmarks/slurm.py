#!/usr/bin/env python3
"""Jobs through Slurm against jobs on the agent's own host, in one run.

    .venv/bin/python benchmarks/slurm.py [--runs N] [--burst 64]     (as root; Debian's slurm-wlm)

It brings up the one-node test cluster (tests/slurmcluster.py: munge, slurmctld, slurmd, two fake
GPUs, every file in a private temporary folder) and two agents on this host with the same config
but the executor: `local` and `slurm`. Rows:

  local        POST /v1/jobs {"command": ["/bin/true"]} to the local agent, then follow its events
               to the exit event (requests, one keep-alive session)
  slurm        the same against the Slurm agent: srun, the node side (a Python start), the
               sandbox from the launcher's code, frames back, the exit event
  srun true    Slurm's own floor: `srun --mem=64 true`, no agent and no sandbox
  session      a warm session's cell `1 + 1`, POST .../cells to its cell_end event, on each agent
               (on Slurm the session is one Slurm job; its cells travel on the step's stdin/stdout)
  burst        N jobs at once (threads POSTing and following at the same time): the wall time
               until the last exit event, and each job's POST->exit; for the local agent, for
               the Slurm agent on the node as configured (its real CPUs; Slurm runs as many
               jobs at once as it has CPUs, the rest queue) and on a node declared with N CPUs
               (SlurmdParameters=config_overrides), where Slurm starts them all at once

The single-job rows run interleaved round-robin (local, slurm, srun, local, ...), so load from
other work on the machine hits them alike. Figures: median and p90 (nearest rank) in ms.
Everything made here is removed at the end, also on Ctrl-C. Results also go to
benchmarks/results/slurm.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from agentproc import Api, running_agent  # noqa: E402
from slurmcluster import SlurmCluster, one_node_cluster, slurm_config  # noqa: E402

RESULTS = HERE / "results" / "slurm.json"
TRUE = {"command": ["/bin/true"], "limits": {"memory_mb": 64}}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    done = [v for v in values if not math.isnan(v)]
    return {"median_ms": round(statistics.median(done), 1), "p90_ms": round(pct(done, 0.9), 1),
            "n": len(done), "not_completed": len(values) - len(done)}


FAILURES: list[str] = []


def post_to_exit(api: Api) -> float:
    """POST -> exit event in ms; a job that did not complete is counted and told, not timed."""
    t0 = time.perf_counter()
    job_id = api.submit(**TRUE)
    events = api.events(job_id, timeout=600)
    elapsed = (time.perf_counter() - t0) * 1000
    if events[-1].get("status") != "COMPLETED":
        FAILURES.append(f"{job_id}: {events[-1].get('reason')}: {events[-1].get('message')}")
        log(f"not completed: {FAILURES[-1]}")
        return math.nan
    return elapsed


class WarmSession:
    """A session kept open on one agent; `cell()` times POST .../cells of `1 + 1` to its cell_end
    (on Slurm: frames down the step's stdin to the node's runner and back)."""

    def __init__(self, api: Api) -> None:
        r = api.call("POST", "/v1/sessions", json={"limits": {"memory_mb": 256}})
        assert r.status_code == 201, r.text
        self.api, self.id, self.after = api, r.json()["id"], 0

    def cell(self) -> float:
        t0 = time.perf_counter()
        assert self.api.call("POST", f"/v1/sessions/{self.id}/cells", json={"code": "1 + 1"}).status_code == 201
        with self.api.call("GET", f"/v1/sessions/{self.id}/events", stream=True, timeout=600,
                           params={"follow": "true", "after": self.after}) as r:
            for line in r.iter_lines():
                event = json.loads(line)
                self.after = event["seq"]
                if event["type"] == "cell_end":
                    return (time.perf_counter() - t0) * 1000 if event["status"] == "ok" else math.nan
                if event["type"] == "exit":
                    raise RuntimeError(f"session {self.id} ended: {event}")
        raise RuntimeError(f"session {self.id}: the stream ended without the cell's end")

    def close(self) -> None:
        self.api.call("DELETE", f"/v1/sessions/{self.id}")


def srun_true(cluster: SlurmCluster) -> float:
    t0 = time.perf_counter()
    cluster.run("srun", "--mem=64", "true", timeout=120)
    return (time.perf_counter() - t0) * 1000


def burst(api: Api, count: int) -> dict[str, Any]:
    """`count` jobs POSTed and followed at once; wall time to the last exit, and each job's own."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        each = list(pool.map(lambda _: post_to_exit(Api(api.url, api.session.headers["Authorization"][7:])),
                             range(count)))
    return {"wall_s": round(time.perf_counter() - t0, 2), "per_job": summary(each)}


def interleaved(rows: dict[str, Any], runs: int, warmup: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    for i in range(warmup + runs):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            value = rows[name]()
            if i >= warmup:
                samples[name].append(value)
    return samples


def measure(runs: int, warmup: int, count: int) -> dict[str, Any]:
    node_root = Path(tempfile.mkdtemp(prefix="jnb-bench-node-"))
    out: dict[str, Any] = {}
    try:
        with one_node_cluster() as cluster, running_agent() as local, \
                running_agent(slurm_config(node_root), env=cluster.env) as slurm:
            log(f"cluster up ({cluster.cpus} CPUs); agents at {local.url} and {slurm.url}")
            samples = interleaved({"local": lambda: post_to_exit(local.api()),
                                   "slurm": lambda: post_to_exit(slurm.api()),
                                   "srun true": lambda: srun_true(cluster)}, runs, warmup)
            out["single"] = {name: summary(values) for name, values in samples.items()}
            log(f"single jobs: {out['single']}")
            warm = [WarmSession(local.api()), WarmSession(slurm.api())]
            try:
                cells = interleaved({"local": warm[0].cell, "slurm": warm[1].cell}, runs, warmup)
            finally:
                for session in warm:
                    session.close()
            out["session_cell"] = {name: summary(values) for name, values in cells.items()}
            log(f"session cells: {out['session_cell']}")
            out["burst_local"] = burst(local.api(), count)
            out["burst_slurm_real_cpus"] = dict(burst(slurm.api(), count), cpus=cluster.cpus)
            log(f"bursts: local {out['burst_local']}, slurm {out['burst_slurm_real_cpus']}")
        with one_node_cluster(cpus=count) as wide, \
                running_agent(slurm_config(node_root), env=wide.env) as slurm:
            out["burst_slurm_wide"] = dict(burst(slurm.api(), count), cpus=wide.cpus)
            log(f"burst on a {count}-CPU node: {out['burst_slurm_wide']}")
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(node_root)], check=False)
    return out


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(result: dict[str, Any], count: int) -> str:
    single, lines = result["single"], []
    base = single["local"]["median_ms"]
    lines.append("| path | median ms | p90 ms | x local |")
    lines.append("|---|---:|---:|---:|")
    for name, label in (("local", "local agent: POST -> exit event"), ("slurm", "Slurm agent: POST -> exit event"),
                        ("srun true", "`srun true` alone (Slurm's floor, no agent)")):
        s = single[name]
        lines.append(f"| {label} | {s['median_ms']} | {s['p90_ms']} | {s['median_ms'] / base:.2f}x |")
    for name, label in (("local", "local agent: a warm session's cell `1 + 1` -> cell_end"),
                        ("slurm", "Slurm agent: the same, the session a Slurm job")):
        s = result["session_cell"][name]
        lines.append(f"| {label} | {s['median_ms']} | {s['p90_ms']} | "
                     f"{s['median_ms'] / result['session_cell']['local']['median_ms']:.2f}x local cell |")
    lines.append("")
    lines.append(f"| {count} jobs at once | wall s | per job median ms | per job p90 ms | not completed |")
    lines.append("|---|---:|---:|---:|---:|")
    for key, label in (("burst_local", "local agent"),
                       ("burst_slurm_real_cpus", f"Slurm agent, node with {result['burst_slurm_real_cpus']['cpus']} CPUs"),
                       ("burst_slurm_wide", f"Slurm agent, node declared with {count} CPUs")):
        b = result[key]
        lines.append(f"| {label} | {b['wall_s']} | {b['per_job']['median_ms']} | {b['per_job']['p90_ms']} | "
                     f"{b['per_job']['not_completed']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--burst", type=int, default=64)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the agents and the test cluster need it")
    result = measure(args.runs, args.warmup, args.burst)
    result["not_completed"] = FAILURES
    result["machine"] = {"cpus": os.cpu_count(), "kernel": platform.release(), "load": os.getloadavg(),
                         "command": " ".join([Path(sys.executable).name] + sys.argv)}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(report(result, args.burst))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What bridge networking adds to a job: `/bin/true` with network "none" and "bridge", side by side.

    .venv/bin/python benchmarks/network.py [--runs N] [--warmup W] [--json PATH]   (as root; N defaults to 100)

Rows, interleaved round-robin (the order alternates every round, so machine noise hits both alike):

  none      a real `joblet-agent serve` (own temporary root, free loopback port): POST /v1/jobs
            {"command": ["/bin/true"], "network": "none"}, then GET .../events?follow=true to the exit event.
  bridge    the same agent and connection, "network": "bridge": the job's veth, address, route and
            IPv6 switch-off are made while its init waits, before /bin/true runs.
  attach    the agent's NetworkManager in this process (own root, so its own bridge and subnet):
            attach() to a process in a fresh network namespace (`unshare -n sleep`, started
            untimed), i.e. the part of `bridge` that the job waits for.
  release   the deletion of that veth, which the agent does on a background thread after the job
            has ended (no job waits for it; it bounds how fast addresses come back).

The first bridge job of an agent also creates the bridge and loads the nftables table; the warm-up
runs pay for that, the counted runs do not. Everything made here is removed at the end, also on
Ctrl-C or failure. Results go to stdout and to benchmarks/results/network.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from lifecycle import HttpAgent, log, summary  # noqa: E402  (the same agent harness as lifecycle.py)

RESULTS = HERE / "results" / "network.json"
PREFIX = "jnb-bench-"


def run_job(agent: HttpAgent, network: str) -> None:
    status, body = agent.request("POST", "/v1/jobs", {"command": ["/bin/true"], "network": network})
    if status != 201:
        raise RuntimeError(f"POST /v1/jobs ({network}): {status} {body[:300]!r}")
    end = agent.follow(json.loads(body)["id"])
    if end.get("status") != "COMPLETED":
        raise RuntimeError(f"a {network} job did not complete: {end}")


class InProcessNetwork:
    """The agent's NetworkManager alone, on a root of its own, attaching to `unshare -n` processes."""

    def __init__(self) -> None:
        from joblet_agent.config import NetworkConfig
        from joblet_agent.network.bridge import NetworkManager
        from joblet_agent.paths import AgentPaths

        self.root = Path(tempfile.mkdtemp(prefix=PREFIX + "net-"))
        self.manager = NetworkManager(AgentPaths.at(self.root), NetworkConfig())
        self.count = 0

    def attach_release(self) -> tuple[float, float]:
        holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
        try:
            while os.stat(f"/proc/{holder.pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
                time.sleep(0.0005)  # until unshare has made the namespace
            job_id = f"{self.count:016x}"
            self.count += 1
            t0 = time.perf_counter()
            self.manager.attach(job_id, holder.pid)
            t1 = time.perf_counter()
            self.manager.release(job_id)
            for future in list(self.manager._pending):
                future.result()
            t2 = time.perf_counter()
        finally:
            holder.kill()
            holder.wait()
        return (t1 - t0) * 1000, (t2 - t1) * 1000

    def close(self) -> None:
        self.manager.close()
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the agent and its sandboxes need root", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # unwind like Ctrl-C, so every clean-up runs
    agent, inproc = HttpAgent(), None
    samples: dict[str, list[float]] = {"none": [], "bridge": [], "attach": [], "release": []}
    try:
        agent.start()
        inproc = InProcessNetwork()
        log(f"warm-up: {args.warmup} runs per row")
        for _ in range(args.warmup):
            run_job(agent, "none")
            run_job(agent, "bridge")
            inproc.attach_release()
        log(f"measuring: {args.runs} rounds")
        for round_ in range(args.runs):
            for network in (("none", "bridge") if round_ % 2 == 0 else ("bridge", "none")):
                t0 = time.perf_counter()
                run_job(agent, network)
                samples[network].append((time.perf_counter() - t0) * 1000)
            attach, release = inproc.attach_release()
            samples["attach"].append(attach)
            samples["release"].append(release)
    finally:
        if inproc is not None:
            inproc.close()
        agent.remove()
        _sweep_network(agent.root)
    stats = {row: summary(values) for row, values in samples.items()}
    ratio = stats["bridge"]["median_ms"] / stats["none"]["median_ms"]
    extra = stats["bridge"]["median_ms"] - stats["none"]["median_ms"]
    report = {"command": " ".join([".venv/bin/python", "benchmarks/network.py", *sys.argv[1:]]),
              "kernel": os.uname().release, "cpus": os.cpu_count(), "runs": args.runs,
              "stats": stats, "bridge_over_none": ratio, "bridge_extra_ms": extra, "samples": samples}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"\n/bin/true through the agent over HTTP, {args.runs} interleaved rounds, kernel {os.uname().release},"
          f" {os.cpu_count()} CPUs\n")
    print("| row | median ms | p90 ms | what |")
    print("|---|---:|---:|---|")
    what = {"none": "network none (loopback only)", "bridge": "network bridge (veth, address, route, rules)",
            "attach": "NetworkManager.attach alone (in-process)",
            "release": "veth deletion after the job (background, not waited for)"}
    for row in ("none", "bridge", "attach", "release"):
        print(f"| {row} | {stats[row]['median_ms']:.1f} | {stats[row]['p90_ms']:.1f} | {what[row]} |")
    print(f"\nbridge / none = {ratio:.2f}x (median), +{extra:.1f} ms; details in {args.json}")
    return 0


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _sweep_network(root: Path) -> None:
    """If the agent died before its clean shutdown, remove its bridge and table as its sweep would."""
    from joblet_agent.config import NetworkConfig
    from joblet_agent.network.bridge import NetworkManager
    from joblet_agent.paths import AgentPaths

    manager = NetworkManager(AgentPaths.at(root), NetworkConfig())
    left = {k: v for k, v in manager.close().items() if v}
    if left:
        log(f"  removed the agent's network leftovers: {left}")


if __name__ == "__main__":
    sys.exit(main())

"""CPU time per trivial job, by who spends it: on a busy 2-core machine, the CPU a job costs is
what sets its pace once the cores are shared (and what 64 jobs at once queue for), and it is far
less disturbed by other work than wall-clock time.

Agent side: the agent process (all its threads), its launcher, and the sandbox processes (stage,
init, the job) as the cgroup parent's CPU accounting sees them (it keeps what its removed job
cgroups used); the client's own share is counted too. Reference: bwrap and everything below it,
from this process's RUSAGE_CHILDREN.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from typing import Any

from .agent import HttpAgent
from .bwrap import BWRAP

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cgroup_cpu_s(parent: str) -> float | None:
    """CPU of everything that ran in the cgroup `parent` or below it, dead children included."""
    for path in (f"/sys/fs/cgroup/cpuacct/{parent}/cpuacct.usage", f"/sys/fs/cgroup/cpu,cpuacct/{parent}/cpuacct.usage"):
        if os.path.exists(path):
            with open(path) as f:
                return int(f.read()) / 1e9
    path = f"/sys/fs/cgroup/{parent}/cpu.stat"
    if os.path.exists(path):
        with open(path) as f:
            stats = dict(line.split() for line in f)
        return int(stats["usage_usec"]) / 1e6
    return None


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def agent_jobs(agent: HttpAgent, n: int) -> dict[str, float]:
    """ms of CPU per `/bin/true` job over HTTP, by component."""
    assert agent.proc is not None
    launcher = agent.launcher_pid
    assert launcher is not None
    before = (process_cpu_s(agent.proc.pid), process_cpu_s(launcher), cgroup_cpu_s(agent.cgroup_parent), self_cpu_s())
    for _ in range(n):
        agent.run_true({})
    time.sleep(0.3)  # the last job's cleanup follows its exit event
    after = (process_cpu_s(agent.proc.pid), process_cpu_s(launcher), cgroup_cpu_s(agent.cgroup_parent), self_cpu_s())
    out = {"agent": after[0] - before[0], "launcher": after[1] - before[1], "client": after[3] - before[3]}
    if before[2] is not None and after[2] is not None:
        out["sandboxes"] = after[2] - before[2]
    return {k: v / n * 1000 for k, v in out.items()}


def bwrap_runs(n: int) -> dict[str, float]:
    before = children_cpu_s()
    for _ in range(n):
        subprocess.run(BWRAP, check=True)
    return {"bwrap": (children_cpu_s() - before) / n * 1000}


def measure(agent: HttpAgent, n: int, rounds: int) -> dict[str, Any]:
    """`rounds` alternating blocks of n agent jobs and n bwraps; the median block of each."""
    agent_blocks, bwrap_blocks = [], []
    for _ in range(rounds):
        agent_blocks.append(agent_jobs(agent, n))
        bwrap_blocks.append(bwrap_runs(n))
    total = lambda b: sum(b.values())  # noqa: E731
    agent_blocks.sort(key=total)
    bwrap_blocks.sort(key=total)
    return {"jobs_per_block": n, "rounds": rounds, "agent_ms": agent_blocks[len(agent_blocks) // 2],
            "bwrap_ms": bwrap_blocks[len(bwrap_blocks) // 2]["bwrap"]}

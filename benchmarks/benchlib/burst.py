"""N trivial jobs at once: through the agent over HTTP, against N bubblewraps started at once.

The agent's side: N threads, each with its own keep-alive connection opened beforehand, are
released together; each POSTs `/bin/true` and follows its events to the exit event. The time is
from the release to the last exit event, and every job must have COMPLETED with exit code 0. The
reference starts N `bwrap ... /bin/true` with Popen in a loop and waits for all of them.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

from .agent import TRUE, HttpAgent
from .bwrap import BWRAP


def agent_burst(agent: HttpAgent, n: int) -> tuple[float, list[dict[str, Any]]]:
    """(seconds until all n ended, their exit events)."""
    conns = [agent.connection() for _ in range(n)]
    for conn in conns:
        conn.connect()
    release = threading.Barrier(n + 1)
    ends: list[dict[str, Any]] = [{} for _ in range(n)]

    def one(i: int) -> None:
        release.wait()
        try:
            ends[i] = agent.follow(agent.submit([TRUE], conn=conns[i]), conn=conns[i])
        except Exception as exc:  # noqa: BLE001 - counted as a failed job
            ends[i] = {"error": repr(exc)}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    release.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for conn in conns:
        conn.close()
    return elapsed, ends


def bwrap_burst(n: int) -> tuple[float, list[int]]:
    """(seconds until all n ended, their exit codes)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(BWRAP) for _ in range(n)]
    codes = [p.wait() for p in procs]
    return time.perf_counter() - t0, codes


def failures(ends: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in ends if e.get("status") != "COMPLETED" or e.get("exit_code") != 0]


def measure(agent: HttpAgent, n: int, rounds: int) -> dict[str, Any]:
    """`rounds` of (agent burst, bwrap burst), alternating which goes first; one unmeasured round first."""
    agent_burst(agent, n)
    bwrap_burst(n)
    agent_s: list[float] = []
    bwrap_s: list[float] = []
    failed: list[dict[str, Any]] = []
    for i in range(rounds):
        for side in (("agent", "bwrap") if i % 2 == 0 else ("bwrap", "agent")):
            if side == "agent":
                elapsed, ends = agent_burst(agent, n)
                agent_s.append(elapsed)
                failed += failures(ends)
            else:
                elapsed, codes = bwrap_burst(n)
                bwrap_s.append(elapsed)
                if any(codes):
                    raise RuntimeError(f"bwrap failed in the burst: exit codes {sorted(set(codes))}")
    return {"jobs": n, "rounds": rounds, "agent_s": agent_s, "bwrap_s": bwrap_s, "failed": failed[:5],
            "failed_count": len(failed)}

"""Memory per running job: N `sleep` jobs through the agent, the PSS of the agent's whole tree
(and of whatever runs in its cgroup parent) while they all run, minus the same when idle, over N.
The reference is N `bwrap ... sleep` at once: the PSS of their process trees over N. A cell-like
job (`CELL_UPLOADS`: a runner and an input in a kept /work, as every notebook cell has) is held and
ends as a cell does; its figure is the same measure with those uploads."""

from __future__ import annotations

import base64
import signal
import subprocess
import time
from typing import Any

from .agent import HttpAgent
from .bwrap import bwrap
from .memory import comm, process_tree, tree_memory

SLEEP = ["sleep", "600"]
CELL_UPLOADS = [{"path": "runner.py", "content_b64": base64.b64encode(b"print(1)\n" * 50).decode(), "mode": 0o644},
                {"path": "in/data.csv", "content_b64": base64.b64encode(b"a,b\n1,2\n").decode(), "mode": 0o644}]


def _until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:g} s")
        time.sleep(0.05)


def agent_jobs(agent: HttpAgent, n: int, uploads: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    idle = agent.memory()
    ids = [agent.submit(SLEEP, **({"uploads": uploads} if uploads else {})) for _ in range(n)]
    try:
        def all_running() -> bool:
            states = [agent.status(i) for i in ids]
            if any(s not in ("PENDING", "RUNNING") for s in states):
                raise RuntimeError(f"sleep jobs ended early: {states}")
            return all(s == "RUNNING" for s in states)
        _until(all_running, f"the {n} sleep jobs did not all run")
        time.sleep(0.3)
        busy = max((agent.memory() for _ in range(3)), key=lambda m: m["tree_pss_mb"])
    finally:
        for i in ids:
            agent.stop(i)
        for i in ids:
            agent.follow(i)
            agent.delete(i)
    return {"jobs": n, "idle": idle, "busy": busy,
            "per_job_pss_mb": (busy["tree_pss_mb"] - idle["tree_pss_mb"]) / n,
            "per_job_processes": (busy["processes"] - idle["processes"]) / n}


def bwrap_sandboxes(n: int) -> dict[str, Any]:
    procs = [subprocess.Popen(bwrap(SLEEP)) for _ in range(n)]
    try:
        _until(lambda: all(any(comm(p) == "sleep" for p in process_tree(proc.pid)) for proc in procs),
               f"the {n} bwrap sleeps did not all run")
        time.sleep(0.3)
        busy = max((tree_memory(*(p.pid for p in procs)) for _ in range(3)), key=lambda m: m["tree_pss_mb"])
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)  # --die-with-parent takes the sandbox with it
            proc.wait()
    return {"sandboxes": n, "busy": busy, "per_sandbox_pss_mb": busy["tree_pss_mb"] / n,
            "per_sandbox_processes": busy["processes"] / n}

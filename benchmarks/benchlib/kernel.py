"""A trivial cell through a real IPython kernel (ipykernel, started with jupyter_client), as a
notebook frontend sends it: `%%joblet run` against python in bubblewrap, run from the same kernel.

A cell's time is from sending its execute_request to the kernel's `idle` status for it on iopub,
which is when a frontend shows the cell as done; the cell's output must have arrived by then. Both
cells print the same line: the reference runs the agent's own cell runner with python3 in bwrap
(`/work/.joblet` bound read-only, as the agent uploads it) and prints what it captured.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .agent import HttpAgent
from .bwrap import bwrap
from .common import PREFIX

CELL = "print('ok')"
EXPECTED = "ok\n"


def reference_command(folder: Path) -> list[str]:
    return bwrap(["python3", "/work/.joblet/run.py"], extra=["--ro-bind", str(folder), "/work/.joblet"])


class Kernel:
    """One python3 kernel with joblet_nb loaded and pointed at `agent` (environment, as in a hub)."""

    def __init__(self, agent: HttpAgent) -> None:
        self.agent = agent
        self.folder = Path(tempfile.mkdtemp(prefix=PREFIX + "kernel-"))
        self.km: Any = None
        self.kc: Any = None

    def start(self) -> None:
        from jupyter_client.manager import KernelManager

        from joblet_agent.jobs.spec import CELL_RUNNER

        joblet = self.folder / "joblet"
        joblet.mkdir()
        shutil.copy(CELL_RUNNER, joblet / "run.py")
        (joblet / "cell.py").write_text(CELL)
        (joblet / "cell.json").write_text(json.dumps({"outputs": []}))
        env = dict(os.environ, JOBLET_URL=self.agent.url, JOBLET_TOKEN=self.agent.token,
                   XDG_CONFIG_HOME=str(self.folder / "xdg"))
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, cwd=str(self.folder))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.run("%load_ext joblet_nb\nimport subprocess\n"
                 f"REFERENCE = {reference_command(joblet)!r}")

    def run(self, code: str) -> tuple[float, str]:
        """(seconds until the kernel is idle again, the cell's stdout); a failed cell raises."""
        t0 = time.perf_counter()
        msg_id = self.kc.execute(code)
        stdout: list[str] = []
        errors: list[str] = []
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=120)
            except queue.Empty:
                raise RuntimeError(f"the kernel did not finish the cell within 120 s: {code!r}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                stdout.append(content["text"])
            elif kind == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                elapsed = time.perf_counter() - t0
                break
        if errors:
            raise RuntimeError(f"cell {code!r} failed: {errors}")
        return elapsed, "".join(stdout)

    def stop(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        if self.km is not None:
            self.km.shutdown_kernel(now=True)
        shutil.rmtree(self.folder, ignore_errors=True)


CELLS = {
    "joblet": f"%%joblet run\n{CELL}",
    "joblet --no-status": f"%%joblet run --no-status\n{CELL}",
    "bwrap": "r = subprocess.run(REFERENCE, capture_output=True, text=True, check=True)\nprint(r.stdout, end='')",
}


def measure(kernel: Kernel, runs: int, warmup: int) -> dict[str, list[float]]:
    """Round-robin over CELLS; ms per cell, each checked for its output."""
    names = list(CELLS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + runs):
        for name in names[i % len(names):] + names[:i % len(names)]:
            elapsed, out = kernel.run(CELLS[name])
            if out != EXPECTED:
                raise RuntimeError(f"cell {name!r} printed {out!r}, not {EXPECTED!r}")
            if i >= warmup:
                times[name].append(elapsed * 1000)
    return times

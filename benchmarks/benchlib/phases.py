"""One `%%joblet run` cell cut into phases: in a real kernel (KernelCells) and in an IPython
InteractiveShell without a kernel (InProcessShell), both with `probes.install` marking each phase.

A phase is the time between two marks. Marks come from three places on one clock
(CLOCK_MONOTONIC): the benchmark (execute request sent, iopub messages received), the shell's
process (probes.py), and the agent's job record (created, running, ended: wall-clock times moved
onto the monotonic clock with the shell's offset between the two).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .agent import HttpAgent
from .kernel import CELL, CELLS, EXPECTED, Kernel

BENCH_DIR = str(Path(__file__).resolve().parent.parent)
TAKE = "__import__('json').dumps(__import__('benchlib.probes').probes.take())"
INSTALL = (f"import sys\nsys.path.insert(0, {BENCH_DIR!r})\nfrom benchlib import probes\n"
           "probes.install(get_ipython())")

# (phase, from mark, to mark): consecutive where the path is sequential
PHASES: list[tuple[str, str, str]] = [
    ("execute_request to the kernel's handler", "send", "kernel execute_request:start"),
    ("ipykernel before run_cell (busy, execute_input)", "kernel execute_request:start", "run_cell:start"),
    ("IPython until the magic", "run_cell:start", "magic:start"),
    ("magic: parse, config, request", "magic:start", "http POST /v1/jobs:start"),
    ("POST /v1/jobs (agent: record, launch)", "http POST /v1/jobs:start", "http POST /v1/jobs:end"),
    ("  of which: until the record's created_at", "http POST /v1/jobs:start", "job created"),
    ("POST answered to events GET sent", "http POST /v1/jobs:end", "http GET /v1/jobs/{id}/events:start"),
    ("  of which: status line made", "status create:start", "status create:end"),
    ("  of which: status line shown", "status show:start", "status show:end"),
    ("agent: job created to running", "job created", "job running"),
    ("events GET to the running event", "http GET /v1/jobs/{id}/events:start", "event:status:RUNNING"),
    ("sandbox: running to ended", "job running", "job ended"),
    ("job ended to exit event parsed", "job ended", "event:exit:COMPLETED"),
    ("exit event to follower done", "event:exit:COMPLETED", "finish:end"),
    ("  of which: output flushed", "flush_buffer:start", "flush_buffer:end"),
    ("  of which: GET record after exit", "http GET /v1/jobs/{id}:start", "http GET /v1/jobs/{id}:end"),
    ("follower done to magic end", "finish:end", "magic:end"),
    ("  of which: status tracker stopped", "tracker stop:start", "tracker stop:end"),
    ("  of which: status line refreshed", "status refresh:start", "status refresh:end"),
    ("magic end to run_cell end", "magic:end", "run_cell:end"),
    ("run_cell end to kernel handler end", "run_cell:end", "kernel execute_request:end"),
    ("handler end to idle received", "kernel execute_request:end", "idle"),
    ("stdout stream message received", "send", "stream"),
    ("total: send to idle", "send", "idle"),
]


def _index(marks: list[tuple[str, int]]) -> dict[str, float]:
    """label -> ns of its first occurrence, in ms."""
    out: dict[str, float] = {}
    for label, t in marks:
        out.setdefault(label, t / 1e6)
    return out


def cut(marks: list[tuple[str, int]]) -> dict[str, float]:
    """Each phase of PHASES whose two marks are there, in ms."""
    at = _index(marks)
    return {name: at[b] - at[a] for name, a, b in PHASES if a in at and b in at}


def record_marks(agent: HttpAgent, job_id: str | None, offset_ns: int) -> list[tuple[str, int]]:
    """The job record's created/running/ended times as marks on the monotonic clock."""
    if not job_id:
        return []
    status, body = agent.request("GET", f"/v1/jobs/{job_id}")
    if status != 200:
        raise RuntimeError(f"GET job {job_id}: {status}")
    rec = json.loads(body)
    names = {"created_at": "job created", "started_at": "job running", "ended_at": "job ended"}
    return [(label, int(rec[key] * 1e9) - offset_ns) for key, label in names.items() if rec.get(key)]


class KernelCells:
    """Cells in `kernel` (probes installed), each returned as its phases in ms."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        k.run(INSTALL)

    def joblet(self) -> dict[str, float]:
        return self._cell(CELLS["joblet"])

    def joblet_no_status(self) -> dict[str, float]:
        return self._cell(CELLS["joblet --no-status"])

    def bwrap(self) -> dict[str, float]:
        return self._cell(CELLS["bwrap"])

    def _cell(self, code: str) -> dict[str, float]:
        kc = self.k.kc
        send = time.perf_counter_ns()
        msg_id = kc.execute(code)
        marks, stdout = [("send", send)], []
        while True:
            try:
                msg = kc.get_iopub_msg(timeout=120)
            except queue.Empty:
                raise RuntimeError(f"no idle within 120 s for {code!r}") from None
            now = time.perf_counter_ns()
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                stdout.append(content["text"])
                marks.append(("stream", now))
            elif kind == "error":
                raise RuntimeError(f"{code!r} failed: {content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                marks.append(("idle", now))
                break
            else:
                marks.append((kind, now))
        if "".join(stdout) != EXPECTED:
            raise RuntimeError(f"{code!r} printed {''.join(stdout)!r}")
        taken = self._take()
        idle = marks[-1][1]
        marks += [(label, t) for label, t in taken["marks"] if send <= t <= idle]  # not the take's own
        marks += record_marks(self.k.agent, taken["job"], taken["offset"])
        return cut(marks)

    def _take(self) -> dict[str, Any]:
        kc = self.k.kc
        msg_id = kc.execute("", silent=True, user_expressions={"m": TAKE})
        while True:
            reply = kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        value = reply["content"]["user_expressions"]["m"]
        if value.get("status") != "ok":
            raise RuntimeError(f"probes: {value}")
        import ast

        return json.loads(ast.literal_eval(value["data"]["text/plain"]))


SHELL = f"""
import io, json, os, sys
sys.path.insert(0, {BENCH_DIR!r})
from IPython.core.interactiveshell import InteractiveShell
reply = os.fdopen(os.dup(1), "w")
shell = InteractiveShell.instance()
shell.run_cell("%load_ext joblet_nb", store_history=False)
from benchlib import probes
probes.install(shell)
for line in sys.stdin:
    code = json.loads(line)
    out, sys.stdout = sys.stdout, io.StringIO()
    result = shell.run_cell(code, store_history=True)
    printed, sys.stdout = sys.stdout.getvalue(), out
    reply.write(json.dumps({{"ok": result.success, "printed": printed, **probes.take()}}) + "\\n")
    reply.flush()
"""


class InProcessShell:
    """The same magic in an IPython InteractiveShell (no kernel, no iopub, no widgets) in a child
    process of its own, pointed at the same agent."""

    def __init__(self, agent: HttpAgent) -> None:
        self.agent = agent
        self.folder = tempfile.mkdtemp(prefix="jnb-bench-shell-")
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = dict(os.environ, JOBLET_URL=self.agent.url, JOBLET_TOKEN=self.agent.token,
                   XDG_CONFIG_HOME=os.path.join(self.folder, "xdg"), IPYTHONDIR=os.path.join(self.folder, "ipy"))
        self.proc = subprocess.Popen([sys.executable, "-c", SHELL], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=self.folder)

    def joblet(self) -> dict[str, float]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        send = time.perf_counter_ns()
        self.proc.stdin.write(json.dumps(f"%%joblet run --no-status\n{CELL}") + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        done = time.perf_counter_ns()
        if not line:
            raise RuntimeError("the in-process shell exited")
        r = json.loads(line)
        if not r["ok"] or r["printed"] != EXPECTED:
            raise RuntimeError(f"in-process cell: ok={r['ok']} printed {r['printed']!r}")
        marks = [("send", send), ("idle", done)] + [(a, b) for a, b in r["marks"]]
        marks += record_marks(self.agent, r["job"], r["offset"])
        return cut(marks)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def phase_table(medians: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per phase, one column per cell kind (medians, ms)."""
    cols = list(medians)
    lines = ["| phase (median ms) | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, _a, _b in PHASES:
        cells = [f"{medians[c][name]:.1f}" if name in medians[c] else "" for c in cols]
        if any(cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


Row = Callable[[], dict[str, float]]

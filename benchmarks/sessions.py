"""Sessions: what a cell costs in a warm session, next to a local cell, a fresh job and bubblewrap;
what a new session costs on each runtime; and many sessions started at once.

Run as root: `.venv/bin/python benchmarks/sessions.py [--runs N] [--warmup W] [--startups N]
[--concurrent N] [--build]`. It starts its own agent (a temporary root, a free loopback port) and
two IPython kernels through jupyter_client, and removes everything at the end.

Cell rows (a real kernel; the time from `execute_request` to the kernel's `idle`; interleaved
round-robin, `--warmup` first and not counted, then the median of `--runs`):
  local     `print('hi')` in a plain kernel
  session   `print('hi')` in a kernel under `%joblet auto`: the cell runs in a warm session
  job       `%%joblet run` of `print('hi')`: a fresh sandbox per cell
  bwrap     `subprocess.run(['bwrap', ..., 'python3', '-c', "print('hi')"])` from the kernel
Start-up rows (a lean HTTP client, no kernel): `POST /v1/sessions`, `POST .../cells` of `1+1`
and its `result` on the event stream; the session is deleted after each, untimed. Median and
p99 per runtime: the base system python3 and every published python runtime of the agent
(`--build` builds python-3.11 first, and python-3.11-ml where the agent has a bridge network).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from agentproc import AgentProcess, running_agent  # noqa: E402

BWRAP = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
         "--new-session", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
         "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/work",
         "--chdir", "/work", "--cap-drop", "ALL", "/usr/bin/python3", "-c", "print('hi')"]
ROWS = {
    "local": "print('hi')",
    "session": "print('hi')",
    "job": "%%joblet run\nprint('hi')",
    "bwrap": f"import subprocess\nprint(subprocess.run({BWRAP!r}, capture_output=True, text=True).stdout, end='')",
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- kernels ------------------------------------------------------------------------------------

class Kernel:
    """An ipykernel through jupyter_client, as a notebook server drives one."""

    def __init__(self, env: dict[str, str]) -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", env=env)

    def run(self, code: str) -> float:
        """Seconds from execute_request to the kernel's idle; a cell that fails raises."""
        start = time.perf_counter()
        msg_id = self.kc.execute(code)
        error = None
        while True:
            msg = self.kc.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "error":
                error = msg["content"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                elapsed = time.perf_counter() - start
                if error:
                    raise RuntimeError(f"{code!r} failed: {error['ename']}: {error['evalue']}")
                return elapsed

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def cell_rows(agent: AgentProcess, runs: int, warmup: int) -> dict[str, list[float]]:
    env = dict(os.environ, JOBLET_URL=agent.url, JOBLET_TOKEN=agent.user_token, XDG_CONFIG_HOME=str(agent.root / "xdg"))
    plain, auto = Kernel(env), Kernel(env)
    try:
        plain.run("%load_ext joblet_nb")
        auto.run("%load_ext joblet_nb\n%joblet session start\n%joblet auto")
        kernels = {"local": plain, "session": auto, "job": plain, "bwrap": plain}
        samples: dict[str, list[float]] = {row: [] for row in ROWS}
        names = list(ROWS)
        for round_no in range(warmup + runs):
            order = names[round_no % len(names):] + names[:round_no % len(names)]
            for row in order:
                took = kernels[row].run(ROWS[row])
                if round_no >= warmup:
                    samples[row].append(took)
        auto.run("%joblet auto off")
        return samples
    finally:
        plain.close()
        auto.close()


# ---- session start-up ----------------------------------------------------------------------------

class Lean:
    """One keep-alive connection to the agent."""

    def __init__(self, agent: AgentProcess, token: str | None = None) -> None:
        self.url = agent.url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token or agent.user_token}"

    def first_cell(self, body: dict[str, Any]) -> tuple[float, str]:
        """Seconds from POST /v1/sessions to the `result` of `1+1`; the session id."""
        start = time.perf_counter()
        sid = self.http.post(f"{self.url}/v1/sessions", json=body).json()["id"]
        self.http.post(f"{self.url}/v1/sessions/{sid}/cells", json={"code": "1+1"}).raise_for_status()
        with self.http.get(f"{self.url}/v1/sessions/{sid}/events", params={"follow": "true"}, stream=True) as r:
            for line in r.iter_lines():
                event = json.loads(line)
                if event["type"] == "result":
                    assert event["data"]["text/plain"] == "2", event
                    return time.perf_counter() - start, sid
                if event["type"] in ("error", "exit"):
                    raise RuntimeError(f"session {sid}: {event}")
        raise RuntimeError(f"session {sid}: the stream ended without a result")

    def delete(self, sid: str) -> None:
        self.http.delete(f"{self.url}/v1/sessions/{sid}")


def startups(agent: AgentProcess, runtime: str | None, n: int, warmup: int) -> list[float]:
    lean = Lean(agent)
    body = {"runtime": runtime} if runtime else {}
    samples = []
    for i in range(warmup + n):
        took, sid = lean.first_cell(body)
        lean.delete(sid)
        if i >= warmup:
            samples.append(took)
    return samples


def at_once(agent: AgentProcess, count: int) -> dict[str, Any]:
    """`count` sessions started by as many threads at once, each with its first cell."""
    results: list[tuple[float, str] | str] = []
    barrier = threading.Barrier(count)

    def one() -> None:
        lean = Lean(agent)
        barrier.wait()
        try:
            results.append(lean.first_cell({}))
        except Exception as exc:  # noqa: BLE001 - counted as a failure
            results.append(f"{type(exc).__name__}: {exc}")

    start = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ok = [r for r in results if isinstance(r, tuple)]
    cleaner = Lean(agent)
    for _, sid in ok:
        cleaner.delete(sid)
    return {"started": count, "succeeded": len(ok), "wall_s": wall,
            "first_cell_median_s": statistics.median(r[0] for r in ok) if ok else None,
            "failures": [r for r in results if isinstance(r, str)][:5]}


def published_pythons(agent: AgentProcess, build: bool) -> list[str]:
    admin = requests.Session()
    admin.headers["Authorization"] = f"Bearer {agent.admin_token}"
    if build:
        for name in ("python-3.11", "python-3.11-ml"):
            r = admin.post(f"{agent.url}/v1/runtimes/{name}/build", json={})
            if r.status_code != 201:
                log(f"not building {name}: {r.text}")
                continue
            log(f"building {name} ...")
            with admin.get(f"{agent.url}/v1/jobs/{r.json()['id']}/events", params={"follow": "true"},
                           stream=True, timeout=3600) as events:
                for _line in events.iter_lines():
                    pass
    listing = admin.get(f"{agent.url}/v1/runtimes").json()
    return sorted(r["name"] for r in listing if str(r.get("language", "python")) == "python"
                  and r["name"].startswith("python"))


# ---- the report ---------------------------------------------------------------------------------

def report(cells: dict[str, list[float]], starts: dict[str, list[float]], burst: dict[str, Any]) -> str:
    med = {row: statistics.median(v) * 1000 for row, v in cells.items()}
    lines = ["| cell (real kernel) | median ms | p90 ms | x local | x job |", "|---|---|---|---|---|"]
    for row, values in cells.items():
        lines.append(f"| {row} | {med[row]:.1f} | {pct(values, 90) * 1000:.1f} | {med[row] / med['local']:.2f} "
                     f"| {med[row] / med['job']:.2f} |")
    lines.append("")
    lines.append(f"warm session cell - local cell = {med['session'] - med['local']:+.1f} ms (goal <= +5 ms); "
                 f"session / job = {med['session'] / med['job']:.2f} (goal <= 0.3)")
    lines += ["", "| new session: create + interpreter + `1+1` back | median ms | p99 ms | runs |", "|---|---|---|---|"]
    for name, values in starts.items():
        lines.append(f"| {name} | {statistics.median(values) * 1000:.1f} | {pct(values, 99) * 1000:.1f} | {len(values)} |")
    lines += ["", f"{burst['succeeded']}/{burst['started']} sessions started at once succeeded in "
                  f"{burst['wall_s']:.1f} s (median first cell {(burst['first_cell_median_s'] or 0) * 1000:.0f} ms)"]
    if burst["failures"]:
        lines.append(f"failures: {burst['failures']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--startups", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--build", action="store_true", help="build python-3.11 (and -ml) on the agent first")
    parser.add_argument("--json", default=str(HERE / "results" / "sessions.json"))
    args = parser.parse_args()
    config = f"sessions:\n  max_per_user: {max(args.concurrent, 128)}\n"
    with running_agent(config) as agent:
        runtimes = published_pythons(agent, args.build)
        log(f"cells: {args.warmup} warm-up + {args.runs} rounds of {', '.join(ROWS)}")
        cells = cell_rows(agent, args.runs, args.warmup)
        starts = {}
        for runtime in [None] + runtimes:
            log(f"session start-up on {runtime or 'base python3'}: {args.startups} runs")
            starts[runtime or "base python3"] = startups(agent, runtime, args.startups, min(args.warmup, 5))
        log(f"{args.concurrent} sessions at once")
        burst = at_once(agent, args.concurrent)
    text = report(cells, starts, burst)
    print(text)
    Path(args.json).parent.mkdir(exist_ok=True)
    Path(args.json).write_text(json.dumps({"cells_s": cells, "startup_s": starts, "burst": burst}, indent=1))
    return 0 if burst["succeeded"] == burst["started"] else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The full lifecycle of `/bin/true`, five ways side by side, plus the agent's memory.

    .venv/bin/python benchmarks/lifecycle.py [--runs N]     (as root; N defaults to 200)

Rows, measured in one run and interleaved round-robin (the order rotates every round, so machine
noise and cache effects hit every row alike):

  agent-http     a real `joblet-agent serve` on a free loopback port with its own temporary root:
                 POST /v1/jobs, then GET /v1/jobs/{id}/events?follow=true until the exit event.
                 One keep-alive http.client connection (a lean client: this measures the agent).
  service        the agent's JobService driven in an asyncio loop in this process, no HTTP:
                 start() then wait() (validation, records and event log on disk, cgroup, launch,
                 status events, finalize). The difference to agent-http is the HTTP layer.
  launcher       the agent's sandbox code alone: a SandboxSpec built exactly as JobService builds
                 it, Launcher.launch() (a stage forked ahead of time, already in its cgroup, takes
                 the job), the status pipe read until EOF, the job's cgroup removed.
  bwrap          bubblewrap with the same namespaces and mounts (see BWRAP below); it makes no
                 cgroup, writes no /etc files, runs no seccomp filter and copies nothing out.
  bwrap-nouserns the same without --unshare-user/--uid/--gid: bwrap needs a user namespace to
                 change uid, the agent does not use one (it setuid()s), so this is the variant
                 with the agent's exact namespace set (but the command runs as uid 0, caps dropped).
  plain          subprocess.run(["/bin/true"]).

Everything made here (agent roots `jnb-bench-*`, cgroups, processes) is removed at the end, also
on Ctrl-C, SIGTERM or failure. Results go to stdout and to benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import platform
import secrets
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "latest.json"
PREFIX = "jnb-bench-"
AGENT = [sys.executable, "-m", "joblet_agent.cli"]
TRUE = "/bin/true"
CONCURRENT = 16

BWRAP_BASE = [
    "bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
    "--die-with-parent", "--new-session",
    "--size", str(256 << 20), "--tmpfs", "/",          # the agent's job root is a 256 MB tmpfs
    "--ro-bind", "/usr", "/usr",
    "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
    "--proc", "/proc", "--dev", "/dev",
    "--size", str(256 << 20), "--tmpfs", "/tmp",
    "--dir", "/work",
    "--cap-drop", "ALL", "--hostname", "joblet",
]
# bwrap 0.8 refuses --uid/--gid without a user namespace, even as root.
BWRAP = BWRAP_BASE + ["--unshare-user", "--uid", "1000", "--gid", "1000", TRUE]
BWRAP_NOUSERNS = BWRAP_BASE + [TRUE]

ROWS = ["agent-http", "service", "launcher", "bwrap", "bwrap-nouserns", "plain"]
DESCRIBE = {
    "agent-http": "agent over HTTP (POST /v1/jobs + follow events to exit)",
    "service": "JobService in-process, no HTTP (start + wait)",
    "launcher": "sandbox code only (spec, cgroup, Launcher.launch, status EOF, cgroup rm)",
    "bwrap": "bwrap, same namespaces + mounts, --unshare-user --uid 1000",
    "bwrap-nouserns": "bwrap, same namespaces + mounts, no userns (uid 0, caps dropped)",
    "plain": "subprocess.run([\"/bin/true\"])",
}


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwind like Ctrl-C so every clean-up step runs. A KeyboardInterrupt, because
    asyncio re-raises only those (and SystemExit) out of a task instead of storing them in it."""


def _on_signal(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- statistics -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(values), "p90_ms": pct(values, 0.9), "mean_ms": statistics.fmean(values),
            "min_ms": min(values), "max_ms": max(values), "n": len(values)}


# ---- memory of a process tree -----------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(root_pid: int) -> list[int]:
    children = _children_map()
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_pss_kb(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line and not line.startswith(" "))
    except OSError:
        return None
    try:
        return int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])
    except (KeyError, ValueError, IndexError):
        return None


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def memory_of(agent_pid: int, launcher_pid: int | None) -> dict[str, Any]:
    """RSS and PSS summed over the agent's process tree, and over agent + launcher alone.

    RSS sums count shared pages (the Python forks share most of theirs) once per process, so the
    RSS sum overstates; PSS splits every shared page among its sharers and adds up honestly."""
    pids = process_tree(agent_pid)
    tree_rss = tree_pss = core_rss = core_pss = 0
    kinds: dict[str, int] = {}
    for pid in pids:
        m = rss_pss_kb(pid)
        if m is None:
            continue
        kinds[comm(pid)] = kinds.get(comm(pid), 0) + 1
        tree_rss += m[0]
        tree_pss += m[1]
        if pid in (agent_pid, launcher_pid):
            core_rss += m[0]
            core_pss += m[1]
    return {"processes": len(pids), "by_name": kinds,
            "tree_rss_mb": tree_rss / 1024, "tree_pss_mb": tree_pss / 1024,
            "agent_launcher_rss_mb": core_rss / 1024, "agent_launcher_pss_mb": core_pss / 1024}


# ---- the real agent, over HTTP ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpAgent:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX + "agent-"))
        self.port = free_port()
        self.log_path = Path(tempfile.mktemp(prefix=PREFIX, suffix=".log"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: http.client.HTTPConnection | None = None
        self.token = ""

    def start(self) -> None:
        env = dict(os.environ, XDG_CONFIG_HOME=str(self.root / "client-config"))  # not the user's config
        self.token = subprocess.run(AGENT + ["token", "create", "--root", str(self.root), "--role", "user",
                                             "--name", "bench"], check=True, capture_output=True, text=True,
                                    env=env).stdout.strip()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(AGENT + ["serve", "--root", str(self.root), "--listen",
                                                  f"127.0.0.1:{self.port}"],
                                         stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)  # Ctrl-C reaches us, not the agent
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited at start:\n{self.log_path.read_text()}")
            try:
                status, _ = self.request("GET", "/v1/health")
                if status == 200:
                    return
            except OSError:
                self.conn = None
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not answer /v1/health within 60 s")
            time.sleep(0.05)

    @property
    def launcher_pid(self) -> int | None:
        assert self.proc is not None
        kids = _children_map().get(self.proc.pid, [])
        python = [p for p in kids if comm(p).startswith("python")]
        return python[0] if python else None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise

    def submit(self, command: list[str]) -> str:
        status, body = self.request("POST", "/v1/jobs", {"command": command})
        if status != 201:
            raise RuntimeError(f"POST /v1/jobs: {status} {body[:300]!r}")
        return json.loads(body)["id"]

    def follow(self, job_id: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/v1/jobs/{job_id}/events?follow=true")
        if status != 200:
            raise RuntimeError(f"GET events: {status} {body[:300]!r}")
        events = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not events or events[-1]["type"] != "exit":
            raise RuntimeError(f"job {job_id}: the event stream ended without an exit event: {events}")
        return events[-1]

    def status(self, job_id: str) -> str:
        status, body = self.request("GET", f"/v1/jobs/{job_id}")
        if status != 200:
            raise RuntimeError(f"GET job: {status} {body[:300]!r}")
        return json.loads(body)["status"]

    def run_true(self, marks: dict[str, float]) -> None:
        t0 = time.perf_counter()
        job_id = self.submit([TRUE])
        marks["post"] = time.perf_counter() - t0
        end = self.follow(job_id)
        if end.get("status") != "COMPLETED" or end.get("exit_code") != 0:
            raise RuntimeError(f"agent job {job_id} did not complete: {end}")

    def remove(self) -> None:
        """Stop the agent (it stops its jobs, its launcher and removes its cgroups), then make sure."""
        if self.conn is not None:
            self.conn.close()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    log("  the agent did not stop within 30 s: killing it")
                    self.proc.kill()
                    self.proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own group (its launcher), if anything is left
        _sweep_root(self.root)
        if self.proc is not None and self.proc.returncode not in (0, -signal.SIGTERM, None):
            log(f"  the agent exited with {self.proc.returncode}; its log:\n{self.log_path.read_text()[-3000:]}")
        shutil.rmtree(self.root, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)


def _sweep_root(root: Path) -> None:
    """Whatever an agent on `root` may have left: mounts, job cgroups (killing their processes), the
    cgroup parent. The agent's own start-up sweep code does the work."""
    from joblet_agent.paths import AgentPaths
    from joblet_agent.sandbox import cgroups
    from joblet_agent.jobs.store import JobStore
    from joblet_agent.jobs.sweep import sweep

    paths = AgentPaths.at(root)
    if not paths.jobs.is_dir():
        return
    try:
        driver = cgroups.detect(paths.cgroup_parent())
        counts = sweep(paths, driver, JobStore(paths.job_state))
        driver.remove_parent()
    except Exception as exc:  # noqa: BLE001 - report, keep cleaning
        log(f"  clean-up of {root}: {exc}")
        return
    left = {k: v for k, v in counts.items() if v and k != "lost"}
    if left:
        log(f"  clean-up of {root} removed leftovers: {left}")


# ---- the agent's code in this process, without HTTP -------------------------------------------


class InProcess:
    """JobService and Launcher of the agent, in this process, on their own temporary root."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX + "inproc-"))
        self.launcher: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        from joblet_agent.auth import Principal
        from joblet_agent.config import AgentConfig
        from joblet_agent.jobs.service import JobService
        from joblet_agent.cluster.launcher_client import Launcher
        from joblet_agent.models import JobRequest
        from joblet_agent.paths import AgentPaths
        from joblet_agent.sandbox import cgroups

        self.paths = AgentPaths.at(self.root)
        self.paths.ensure()
        self.driver = cgroups.detect(self.paths.cgroup_parent())
        if self.driver.missing():
            raise RuntimeError(f"cgroup controllers missing: {self.driver.missing()}")
        self.launcher = Launcher(self.paths.cgroup_parent())
        # The warm launcher is our child: keep Ctrl-C (sent to our whole process group) from killing
        # it mid-job; it exits when we close its socket, or by PR_SET_PDEATHSIG if we die.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.launcher.start()
        finally:
            signal.signal(signal.SIGINT, old)
        self.config = AgentConfig()
        self.service = JobService(self.paths, self.config, self.driver, self.launcher)
        self.who = Principal(id="bench", name="bench", role="user")
        self.request = JobRequest(command=[TRUE])
        self.loop = asyncio.new_event_loop()

    # -- row "service" --
    def run_service(self, marks: dict[str, float]) -> None:
        assert self.loop is not None
        record = self.loop.run_until_complete(self._service_once(marks))
        if record.status.value != "COMPLETED" or record.exit_code != 0:
            raise RuntimeError(f"service job {record.id}: {record.status.value} {record.reason} {record.message}")

    async def _service_once(self, marks: dict[str, float]) -> Any:
        t0 = time.perf_counter()
        record = await self.service.start(self.who, self.request)
        marks["start"] = time.perf_counter() - t0
        await self.service.wait(record.id)
        return record

    # -- row "launcher" --
    def run_launcher(self, marks: dict[str, float]) -> None:
        """The sandbox part of JobService.start/_watch/_finalize, with nothing else: no records,
        no event log, no asyncio. The spec is the agent's own (jobspec.standard_spec), so it cannot drift."""
        from joblet_agent.jobs import spec as jobspec
        from joblet_agent.models import JobRecord
        from joblet_agent.sandbox import status

        t0 = time.perf_counter()
        svc = self.service
        job_id = secrets.token_hex(8)
        limits = jobspec.effective_limits(self.request.limits, svc.config.defaults, svc.config.max_limits)
        record = JobRecord(id=job_id, owner=self.who.id, limits=limits, network="none",
                           command=[TRUE], created_at=time.time())
        slot = svc._take_slot()
        cgroup = None
        root_dir: Path | None = None
        events: list[status.Message] = []
        try:
            cgroup = svc.driver.open(f"job-{job_id}")  # made ahead by the stage that takes the job
            marks["cgroup_create"] = time.perf_counter() - t0
            spec = jobspec.standard_spec(record, self.request, None, svc.config.uid_base + slot,
                                         svc.paths.jobs / job_id, svc.store.artifacts(job_id),
                                         svc._cgroup_limits(limits))
            root_dir = Path(spec.root_dir)
            root_dir.mkdir(mode=0o700)
            marks["launch_start"] = time.perf_counter() - t0
            pipes = self.launcher.launch(spec, wait_for_go=False)
            marks["launch_end"] = time.perf_counter() - t0
            open_fds = {pipes.stdout, pipes.stderr, pipes.status}
            buffer = b""
            try:
                while open_fds:
                    ready, _, _ = select.select(list(open_fds), [], [], 60)
                    if not ready:
                        raise RuntimeError(f"launcher job {job_id}: no status for 60 s")
                    now = time.perf_counter()
                    for fd in ready:
                        data = os.read(fd, 65536)
                        if not data:
                            open_fds.discard(fd)
                            os.close(fd)
                            if fd == pipes.status:
                                marks["eof"] = now - t0
                            continue
                        if fd == pipes.status:
                            buffer += data
                            while b"\n" in buffer:
                                line, _, buffer = buffer.partition(b"\n")
                                event = status.parse(line)
                                events.append(event)
                                marks.setdefault("ev_" + event.kind.value, now - t0)
            finally:
                for fd in open_fds:
                    os.close(fd)
        finally:
            if cgroup is not None:
                t2 = time.perf_counter()
                cgroup.remove()
                marks["cgroup_remove"] = time.perf_counter() - t2
            if root_dir is not None:
                with contextlib.suppress(FileNotFoundError):
                    root_dir.rmdir()
            svc._slots.discard(slot)
        ends = [e for e in events if e.kind in status.TERMINAL]
        if not ends or ends[0].kind is not status.Kind.EXIT or ends[0].exit_code != 0:
            raise RuntimeError(f"launcher job {job_id} failed: {events}")

    def remove(self) -> None:
        # No service.shutdown(): after an interrupt a job's _finalize may have been cut short and
        # would never signal "done". The sweep below kills and removes whatever a job left.
        if self.loop is not None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.close()
        if self.launcher is not None:
            self.launcher.stop()
        _sweep_root(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


# ---- the benchmark ----------------------------------------------------------------------------


def run_plain(_marks: dict[str, float]) -> None:
    subprocess.run([TRUE], check=True)


def run_bwrap(_marks: dict[str, float]) -> None:
    subprocess.run(BWRAP, check=True)


def run_bwrap_nouserns(_marks: dict[str, float]) -> None:
    subprocess.run(BWRAP_NOUSERNS, check=True)


def measure_concurrent(agent: HttpAgent) -> tuple[dict[str, Any], float]:
    """Start CONCURRENT `sleep 2` jobs, sample memory once all run, wait for all to end."""
    t0 = time.perf_counter()
    ids = [agent.submit(["sleep", "2"]) for _ in range(CONCURRENT)]
    deadline = time.monotonic() + 30
    while True:
        states = [agent.status(i) for i in ids]
        if all(s == "RUNNING" for s in states):
            break
        if any(s not in ("PENDING", "RUNNING") for s in states) or time.monotonic() > deadline:
            raise RuntimeError(f"the {CONCURRENT} sleep jobs did not all reach RUNNING: {states}")
        time.sleep(0.02)
    all_running = time.perf_counter() - t0
    samples = []
    for _ in range(3):
        samples.append(memory_of(agent.proc.pid, agent.launcher_pid))  # type: ignore[union-attr]
        time.sleep(0.1)
    for i in ids:
        end = agent.follow(i)
        if end.get("status") != "COMPLETED":
            raise RuntimeError(f"sleep job {i}: {end}")
    return max(samples, key=lambda s: s["tree_pss_mb"]), all_running


def command_line() -> str:
    exe = sys.executable
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(exe)
        if not rel.startswith(".."):
            exe = rel
    return shlex.join([exe] + sys.argv)


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="measured runs per row (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured runs per row first (default %(default)s)")
    parser.add_argument("--json", default=str(RESULTS), help="where to write the results (default %(default)s)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if os.geteuid() != 0:
        print("lifecycle.py: run as root (the agent and its sandboxes need root)", file=sys.stderr)
        return 2
    if shutil.which("bwrap") is None:
        print("lifecycle.py: bwrap not found (apt-get install bubblewrap)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))  # not needed when the package is installed, harmless when it is

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    rc = 0
    with contextlib.ExitStack() as cleanup:
        try:
            rc = _bench(args, cleanup)
        except KeyboardInterrupt as exc:
            log(f"\ninterrupted ({type(exc).__name__} {exc}); cleaning up")
            rc = 130
        except Exception:
            import traceback

            traceback.print_exc()
            log("failed; cleaning up")
            rc = 1
        finally:
            # Clean-up must finish: no further Ctrl-C / SIGTERM while it runs.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
    return rc


def _safely(name: str, fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - one failed step must not skip the others
            log(f"  clean-up step {name} failed: {exc!r}")
    return run


def _bench(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    runs = args.runs
    log(f"starting an agent and the in-process sandbox code (roots {tempfile.gettempdir()}/{PREFIX}*)")
    agent = HttpAgent()
    cleanup.callback(_safely("agent", agent.remove))
    agent.start()
    inproc = InProcess()
    cleanup.callback(_safely("in-process", inproc.remove))
    inproc.start()

    fns: dict[str, Callable[[dict[str, float]], None]] = {
        "agent-http": agent.run_true, "service": inproc.run_service, "launcher": inproc.run_launcher,
        "bwrap": run_bwrap, "bwrap-nouserns": run_bwrap_nouserns, "plain": run_plain,
    }

    # One job first so that lazy imports and first-use costs are paid, then idle memory.
    agent.run_true({})
    time.sleep(0.5)
    mem_idle = memory_of(agent.proc.pid, agent.launcher_pid)  # type: ignore[union-attr]

    log(f"warm-up: {args.warmup} runs per row")
    for _ in range(args.warmup):
        for name in ROWS:
            fns[name]({})

    times: dict[str, list[float]] = {name: [] for name in ROWS}
    marks: dict[str, list[dict[str, float]]] = {name: [] for name in ROWS}
    log(f"measuring: {runs} rounds of {len(ROWS)} rows, interleaved round-robin")
    t_start = time.monotonic()
    for i in range(runs):
        order = ROWS[i % len(ROWS):] + ROWS[:i % len(ROWS)]
        for name in order:
            m: dict[str, float] = {}
            t0 = time.perf_counter()
            fns[name](m)
            times[name].append((time.perf_counter() - t0) * 1000)
            marks[name].append(m)
        if (i + 1) % max(1, runs // 10) == 0:
            log(f"  {i + 1}/{runs} rounds ({time.monotonic() - t_start:.0f} s)")

    time.sleep(0.5)
    mem_idle_after = memory_of(agent.proc.pid, agent.launcher_pid)  # type: ignore[union-attr]
    log(f"memory: {CONCURRENT} concurrent `sleep 2` jobs")
    mem_busy, all_running_s = measure_concurrent(agent)

    stats = {name: summary(times[name]) for name in ROWS}
    base_bwrap = stats["bwrap"]["median_ms"]
    base_plain = stats["plain"]["median_ms"]
    for name in ROWS:
        stats[name]["x_bwrap"] = stats[name]["median_ms"] / base_bwrap
        stats[name]["x_plain"] = stats[name]["median_ms"] / base_plain
        stats[name]["what"] = DESCRIBE[name]

    breakdown = _breakdown(marks)
    cmd = command_line()
    _print_report(stats, breakdown, mem_idle, mem_idle_after, mem_busy, all_running_s, runs, cmd)

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    from joblet_agent import __version__

    out.write_text(json.dumps({
        "command": cmd,
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": _git_head(),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "bwrap": subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip(),
                 "cgroup": inproc.driver.version, "agent": __version__},
        "runs": runs, "warmup": args.warmup, "order": "round-robin, rotating start",
        "bwrap_command": shlex.join(BWRAP), "bwrap_nouserns_command": shlex.join(BWRAP_NOUSERNS),
        "rows": stats, "breakdown_ms": breakdown,
        "memory": {"idle": mem_idle, "idle_after_runs": mem_idle_after,
                   f"running_{CONCURRENT}": mem_busy, f"seconds_until_{CONCURRENT}_running": all_running_s},
        "samples_ms": times,
    }, indent=1) + "\n")
    log(f"wrote {out}")
    return 0


def _git_head() -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "agent"],
                               capture_output=True, text=True).stdout.strip()
        return r.stdout.strip() + (" (agent/ modified)" if dirty else "")
    except OSError:
        return None


def _breakdown(marks: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Medians of the phases (ms). The launcher's marks are offsets from the start of its run, except
    cgroup_create and cgroup_remove (durations); a phase is the difference of two medians."""
    def med(name: str, key: str) -> float | None:
        vals = [m[key] * 1000 for m in marks[name] if key in m]
        return statistics.median(vals) if vals else None

    out: dict[str, dict[str, float]] = {}
    L = {k: med("launcher", k) for k in ("cgroup_create", "launch_start", "launch_end", "ev_started", "ev_running",
                                         "ev_exit", "ev_done", "eof", "cgroup_remove")}
    if all(v is not None for v in L.values()):
        out["launcher"] = {
            "cgroup open (the stage made it ahead and writes the limits)": L["cgroup_create"],
            "spec (jobspec.standard_spec) + mkdir job root": L["launch_start"] - L["cgroup_create"],
            "launch() call (spec JSON, memfd, sendmsg)": L["launch_end"] - L["launch_start"],
            "-> 'started' (a waiting stage takes the job: cgroup renamed + limited, mounts, fork init)":
                L["ev_started"] - L["launch_end"],
            "'started' -> 'running' (init: mounts, pivot_root, lo up, fork job)": L["ev_running"] - L["ev_started"],
            "'running' -> 'exit' (uid, seccomp, exec /bin/true, reap)": L["ev_exit"] - L["ev_running"],
            "'exit' -> 'done' (init exits, namespaces torn down, stage 1 copies /work out)": L["ev_done"] - L["ev_exit"],
            "'done' -> status EOF": L["eof"] - L["ev_done"],
            "cgroup remove": L["cgroup_remove"],
        }
    post = med("agent-http", "post")
    if post is not None:
        out["agent-http"] = {"POST /v1/jobs returns": post}
    start = med("service", "start")
    if start is not None:
        out["service"] = {"start() returns": start}
    return out


def _print_report(stats: dict[str, dict[str, Any]], breakdown: dict[str, dict[str, float]],
                  idle: dict[str, Any], idle_after: dict[str, Any], busy: dict[str, Any], all_running_s: float,
                  runs: int, cmd: str) -> None:
    print()
    print(f"Lifecycle of /bin/true, {runs} runs per row, interleaved round-robin")
    print(f"{'row':<16} {'median ms':>10} {'p90 ms':>8} {'x bwrap':>8} {'x plain':>8}  what")
    for name in ROWS:
        s = stats[name]
        print(f"{name:<16} {s['median_ms']:>10.2f} {s['p90_ms']:>8.2f} {fmt_ratio(s['x_bwrap']):>8} "
              f"{fmt_ratio(s['x_plain']):>8}  {s['what']}")
    print()
    print("Where the time goes (medians, ms)")
    for row, phases in breakdown.items():
        for phase, ms in phases.items():
            print(f"  {row:<11} {phase:<78} {ms:7.2f}")
    print()
    print("Agent memory (agent process tree: agent, launcher, and per job stage 1 + init + the job)")
    for label, m in (("idle", idle), (f"idle after {runs} runs", idle_after), (f"{CONCURRENT} jobs running", busy)):
        print(f"  {label:<22} procs {m['processes']:>3}  agent+launcher RSS {m['agent_launcher_rss_mb']:6.1f} MB "
              f"PSS {m['agent_launcher_pss_mb']:6.1f} MB   whole tree RSS {m['tree_rss_mb']:7.1f} MB "
              f"PSS {m['tree_pss_mb']:6.1f} MB")
    print(f"  ({CONCURRENT} `sleep 2` jobs were all RUNNING {all_running_s * 1000:.0f} ms after the first POST)")
    print()
    print("Markdown (for the README):")
    print()
    print("| path | median ms | p90 ms | x bwrap | x plain exec |")
    print("|---|---:|---:|---:|---:|")
    for name in ROWS:
        s = stats[name]
        print(f"| {name}: {s['what']} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} | {fmt_ratio(s['x_bwrap'])} | "
              f"{fmt_ratio(s['x_plain'])} |")
    print()
    print("| agent memory | processes | agent+launcher RSS / PSS MB | whole tree RSS / PSS MB |")
    print("|---|---:|---:|---:|")
    for label, m in (("idle (after 1 job)", idle), (f"idle after {runs} runs per row", idle_after),
                     (f"{CONCURRENT} `sleep 2` jobs running", busy)):
        print(f"| {label} | {m['processes']} | {m['agent_launcher_rss_mb']:.1f} / {m['agent_launcher_pss_mb']:.1f} | "
              f"{m['tree_rss_mb']:.1f} / {m['tree_pss_mb']:.1f} |")
    print()
    print(f"Command: `{cmd}`")


if __name__ == "__main__":
    sys.exit(main())

"""A real `joblet-agent serve` on its own temporary root and a free loopback port, and a lean
client of it (one keep-alive `http.client` connection: this measures the agent, not a client)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import PREFIX, log
from .memory import agent_memory, children_map, comm

AGENT = [sys.executable, "-m", "joblet_agent.cli"]
TRUE = "/bin/true"
KEEP_ALIVE_S = 2.0  # uvicorn closes a keep-alive connection idle for 5 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpAgent:
    """`config` becomes the agent's agent.yml (keys of AgentConfig that this checkout knows);
    `python` runs the agent (another checkout's interpreter, to compare two; default this one)."""

    def __init__(self, config: dict[str, Any] | None = None, python: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX + "agent-"))
        self.port = free_port()
        self.log_path = Path(tempfile.mktemp(prefix=PREFIX, suffix=".log"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: http.client.HTTPConnection | None = None
        self.token = ""
        self.used = 0.0
        self.config = config or {}
        self.argv = [python or sys.executable, *AGENT[1:]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, XDG_CONFIG_HOME=str(self.root / "client-config"))  # not the user's config

    def start(self) -> None:
        from joblet_agent.config import AgentConfig

        known = {k: v for k, v in self.config.items() if k in AgentConfig.model_fields}
        if known:
            (self.root / "config").mkdir(mode=0o700, exist_ok=True)
            (self.root / "config" / "agent.yml").write_text(json.dumps(known))  # JSON is YAML
        self.token = subprocess.run(self.argv + ["token", "create", "--root", str(self.root), "--role", "user",
                                             "--name", "bench"], check=True, capture_output=True, text=True,
                                    env=self.env).stdout.strip()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv + ["serve", "--root", str(self.root), "--listen",
                                                  f"127.0.0.1:{self.port}"],
                                         stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)  # Ctrl-C reaches us, not the agent
        deadline = time.monotonic() + 900  # a first start builds the base image before it serves
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
                raise RuntimeError("the agent did not answer /v1/health within 900 s")
            time.sleep(0.05)

    @property
    def launcher_pid(self) -> int | None:
        assert self.proc is not None
        kids = children_map().get(self.proc.pid, [])
        python = [p for p in kids if comm(p).startswith("python")]
        return python[0] if python else None

    @property
    def cgroup_parent(self) -> str:
        from joblet_agent.paths import AgentPaths

        return AgentPaths.at(self.root).cgroup_parent()

    def memory(self) -> dict[str, Any]:
        assert self.proc is not None
        return agent_memory(self.proc.pid, self.launcher_pid, self.cgroup_parent)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)

    def request(self, method: str, path: str, body: Any = None,
                conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
        """One call on `conn` (default: this object's own keep-alive connection)."""
        own = conn is None
        if own:
            if self.conn is not None and time.monotonic() - self.used > KEEP_ALIVE_S:
                self.conn.close()  # the server may have closed it meanwhile: a send would fail
                self.conn = None
            if self.conn is None:
                self.conn = self.connection()
            conn = self.conn
            self.used = time.monotonic()
        assert conn is not None
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            if own:
                self.conn = None
            raise

    def submit(self, command: list[str], conn: http.client.HTTPConnection | None = None,
               **fields: Any) -> str:
        status, body = self.request("POST", "/v1/jobs", {"command": command, **fields}, conn)
        if status != 201:
            raise RuntimeError(f"POST /v1/jobs: {status} {body[:300]!r}")
        return json.loads(body)["id"]

    def follow(self, job_id: str, conn: http.client.HTTPConnection | None = None) -> dict[str, Any]:
        """The job's exit event, after reading its whole event stream."""
        status, body = self.request("GET", f"/v1/jobs/{job_id}/events?follow=true", conn=conn)
        if status != 200:
            raise RuntimeError(f"GET events: {status} {body[:300]!r}")
        last = body[body.rstrip(b"\n").rfind(b"\n") + 1:]
        end = json.loads(last) if last.strip() else {}
        if end.get("type") != "exit":
            raise RuntimeError(f"job {job_id}: the event stream ended without an exit event: {body[-500:]!r}")
        return end

    def status(self, job_id: str) -> str:
        status, body = self.request("GET", f"/v1/jobs/{job_id}")
        if status != 200:
            raise RuntimeError(f"GET job: {status} {body[:300]!r}")
        return json.loads(body)["status"]

    def stop(self, job_id: str) -> None:
        self.request("POST", f"/v1/jobs/{job_id}/stop")

    def delete(self, job_id: str) -> None:
        status, body = self.request("DELETE", f"/v1/jobs/{job_id}")
        if status != 204:
            raise RuntimeError(f"DELETE job: {status} {body[:300]!r}")

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
        sweep_root(self.root)
        if self.proc is not None and self.proc.returncode not in (0, -signal.SIGTERM, None):
            log(f"  the agent exited with {self.proc.returncode}; its log:\n{self.log_path.read_text()[-3000:]}")
        shutil.rmtree(self.root, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)


def sweep_root(root: Path) -> None:
    """Whatever an agent on `root` may have left: mounts, job cgroups (killing their processes), the
    cgroup parent. The agent's own start-up sweep code does the work."""
    from joblet_agent.jobs.sweep import sweep
    from joblet_agent.paths import AgentPaths
    from joblet_agent.sandbox import cgroups

    paths = AgentPaths.at(root)
    if not paths.jobs.is_dir():
        return
    try:
        driver = cgroups.detect(paths.cgroup_parent())
        counts = sweep(paths, driver)
        driver.remove_parent()
    except Exception as exc:  # noqa: BLE001 - report, keep cleaning
        log(f"  clean-up of {root}: {exc}")
        return
    left = {k: v for k, v in counts.items() if v and k != "lost"}
    if left:
        log(f"  clean-up of {root} removed leftovers: {left}")

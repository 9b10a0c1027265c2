"""A real agent for tests: `joblet-agent serve` on loopback with its own root, and a small
requests-based caller. Used by conftest.py and by tests that need an agent of their own."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

TEST_PREFIX = "jnb-test-"
AGENT = [sys.executable, "-m", "joblet_agent.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_token(root: Path, role: str, name: str | None = None) -> str:
    cmd = AGENT + ["token", "create", "--root", str(root), "--role", role] + (["--name", name] if name else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return out.strip()


@dataclass
class AgentProcess:
    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    user_token: str = ""
    admin_token: str = ""
    log_path: Path = field(default_factory=lambda: Path(tempfile.mktemp(prefix=TEST_PREFIX, suffix=".log")))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def fresh(cls) -> "AgentProcess":
        root = Path(tempfile.mkdtemp(prefix=TEST_PREFIX))
        agent = cls(root=root, port=free_port())
        agent.user_token = create_token(root, "user", "tester")
        agent.admin_token = create_token(root, "admin", "test-admin")
        return agent

    def start(self, extra_env: dict[str, str] | None = None, scheme: str = "http") -> "AgentProcess":
        env = dict(os.environ, XDG_CONFIG_HOME=str(self.root / "client-config"), **(extra_env or {}))
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(AGENT + ["serve", "--root", str(self.root), "--listen", f"127.0.0.1:{self.port}"],
                                     stdout=log, stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.log_path.read_text()}")
            try:
                requests.get(f"{scheme}://127.0.0.1:{self.port}/v1/health", timeout=1, verify=False)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("agent did not come up in 60s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)

    def api(self, token: str | None = None) -> "Api":
        return Api(self.url, self.user_token if token is None else token)


class Api:
    """Just enough of a client for the agent's own tests (the notebook client is tested apart)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=kw.pop("timeout", 60), **kw)

    def submit(self, **body: Any) -> str:
        r = self.call("POST", "/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def events(self, job_id: str, after: int = 0, follow: bool = True, timeout: float = 120) -> list[dict[str, Any]]:
        r = self.call("GET", f"/v1/jobs/{job_id}/events", params={"follow": str(follow).lower(), "after": after},
                      stream=True, timeout=timeout)
        assert r.status_code == 200, r.text
        return [json.loads(line) for line in r.iter_lines() if line]

    def run(self, **body: Any) -> "Result":
        job_id = self.submit(**body)
        events = self.events(job_id)
        record = self.call("GET", f"/v1/jobs/{job_id}").json()
        return Result(job_id, record, events)


@dataclass
class Result:
    id: str
    record: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def stdout(self) -> str:
        return "".join(e["data"] for e in self.events if e["type"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(e["data"] for e in self.events if e["type"] == "stderr")

    @property
    def exit(self) -> dict[str, Any]:
        return self.events[-1]

    def explain(self) -> str:
        return f"record={self.record}\nstdout={self.stdout}\nstderr={self.stderr}"


@contextlib.contextmanager
def running_agent(config: str | None = None) -> Iterator[AgentProcess]:
    """A real agent of a test's own (with `config` as its agent.yml); once it has stopped, it must
    have left nothing behind."""
    proc = AgentProcess.fresh()
    if config:
        (proc.root / "config").mkdir(parents=True, exist_ok=True)
        (proc.root / "config" / "agent.yml").write_text(config)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        left = leftovers(proc.root)
        proc.remove()
        assert not left, f"the agent left things behind: {left}"


def leftovers(root: Path, running: bool = False) -> list[str]:
    """Mounts, cgroups and job folders an agent on `root` left behind. With `running`, the agent
    is still up, and the cgroups of its sandbox stages waiting for a job (`stage-*`) are its own."""
    found = []
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {ln.split()[4]}" for ln in f if str(root) in ln.split()[4]]
    jobs = root / "jobs"
    if jobs.exists():
        found += [f"folder {p}" for p in jobs.iterdir()]
    import hashlib

    parent = "jnb-" + hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]
    tag = parent.removeprefix("jnb-")
    if not running and Path(f"/sys/class/net/jnb-br-{tag}").exists():
        found.append(f"bridge jnb-br-{tag}")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if not running and f"jnb_{tag}" in tables.split():
        found.append(f"nftables table jnb_{tag}")
    for base in Path("/sys/fs/cgroup").glob("*"):
        for candidate in (base / parent, base / "unified" / parent):
            if candidate.is_dir():
                found += [f"cgroup {p}" for p in candidate.iterdir()
                          if p.is_dir() and not (running and p.name.startswith("stage-"))]
    return found

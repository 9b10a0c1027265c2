"""Real agents for tests: `running_agent`, the one way a test starts `joblet-agent serve` (on
loopback or a unix socket, with its own root), a small requests-based caller, and what the host
sees of an agent's jobs (leftovers, processes)."""

from __future__ import annotations

import atexit
import contextlib
import glob
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from waiting import wait_until

TEST_PREFIX = "jnb-test-"
AGENT = [sys.executable, "-m", "joblet_agent.cli"]
NEEDS_ROOT = "needs root: starts real sandboxes"
FINISHED = ("COMPLETED", "FAILED", "STOPPED")


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
    """One `joblet-agent serve` on its own root; `start` and `stop` may be called again (restarts)."""

    root: Path
    port: int
    scheme: str = "http"
    unix: Path | None = None
    nofile: tuple[int, int] | None = None  # (soft, hard) descriptor limit to start with (systemd: 1024 soft)
    proc: subprocess.Popen[bytes] | None = None
    user_token: str = ""
    admin_token: str = ""
    env: dict[str, str] = field(default_factory=dict)  # more environment for the agent process
    prefix: list[str] = field(default_factory=list)  # a command the agent runs under (e.g. pidns.py)
    stop_jobs: bool = True   # SIGTERM stops its jobs (without: they outlive it, for the next start)
    log_path: Path = field(default_factory=lambda: Path(tempfile.mktemp(prefix=TEST_PREFIX, suffix=".log")))

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "AgentProcess":
        where = ["--unix", str(self.unix)] if self.unix else ["--listen", f"127.0.0.1:{self.port}"]
        env = dict(os.environ, XDG_CONFIG_HOME=str(self.root / "client-config"), **self.env)
        limit = self.nofile
        preexec = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit)) if limit else None
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.prefix + AGENT + ["serve", "--root", str(self.root), *where]
                                         + (["--stop-jobs"] if self.stop_jobs else []),
                                         stdout=log, stderr=log, env=env, start_new_session=True,
                                         preexec_fn=preexec)
        wait_until(self._answers, timeout=timeout, message="the agent did not come up")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited: {self.log_path.read_text()}")
        try:
            if self.unix:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.unix)), timeout=1) as c:
                    return c.get("http://agent/v1/health").status_code == 200
            requests.get(f"{self.url}/v1/health", timeout=1, verify=False)
            return True
        except (requests.ConnectionError, httpx.TransportError):
            return False

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


_base_seed: list[Path] = []


def base_seed() -> Path:
    """The minimal base image as a real agent built it (once per test process, on first use):
    its published version folder and the digest the agent recorded, kept until the process exits."""
    if not _base_seed:
        with running_agent(seed_base=False) as builder:
            api = builder.api(builder.admin_token)
            wait_until(lambda: _base_built(api, builder), timeout=900, interval=1,
                       message="the seed agent did not build the base image")
            seed = Path(tempfile.mkdtemp(prefix=TEST_PREFIX + "base-seed-"))
            atexit.register(shutil.rmtree, seed, True)
            shutil.copytree(os.path.realpath(builder.root / "runtimes" / "base"), seed / "version", symlinks=True)
            shutil.copy2(builder.root / "state" / "runtimes" / "base.json", seed / "base.json")
        _base_seed.append(seed)
    return _base_seed[0]


def _base_built(api: "Api", agent: AgentProcess) -> bool:
    """Whether the agent published its base image; stops the wait if its build failed."""
    if "joblet-agent: the base image" in agent.log_path.read_text():
        raise AssertionError(f"the base image build failed: {agent.log_path.read_text()[-4000:]}")
    return api.call("GET", "/v1/runtimes/base").json().get("status") == "verified"


def publish_base(root: Path) -> None:
    """Publish the session's base image in a new agent root, as its own build would have: the agent
    verifies it in full when it starts (a copy that differs is refused, and the agent rebuilds)."""
    seed = base_seed()
    version = json.loads((seed / "base.json").read_text())["version"]
    versions = root / "runtimes" / ".versions" / "base"
    versions.mkdir(mode=0o700, parents=True)
    os.chmod(versions.parent, 0o700)
    shutil.copytree(seed / "version", versions / version, symlinks=True)
    os.symlink(f".versions/base/{version}", root / "runtimes" / "base")
    (root / "state" / "runtimes").mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy2(seed / "base.json", root / "state" / "runtimes" / "base.json")


@contextlib.contextmanager
def running_agent(config: str | None = None, *, tls: bool = False, unix: bool = False,
                  parent: str | None = None, env: dict[str, str] | None = None,
                  nofile: tuple[int, int] | None = None, prefix: list[str] | None = None,
                  seed_base: bool = True, stop_jobs: bool = True) -> Iterator[AgentProcess]:
    """A real agent of a test's own, started: `config` becomes its agent.yml, `tls` serves HTTPS,
    `unix` listens on `root/agent.sock` only, `parent` is where its root is made, `env` is added to
    its environment, `nofile` is the descriptor limit it starts with, `prefix` a command it runs
    under. Its production jobs run on the minimal base image: `seed_base` publishes the one built
    once per test process in its root (False: the agent builds its own, at start; a Slurm agent
    always does, as its node checks the stat fingerprints of the very build the manifest recorded,
    which a copy does not keep). `stop_jobs` (`--stop-jobs`) makes SIGTERM stop its jobs. Once it
    has stopped, it must have left nothing behind; jobs it left running are stopped by one more
    start of the agent with `--stop-jobs`, and whatever still remains is removed, so a failed test
    leaves nothing to the next. Without root, the test is skipped."""
    if os.geteuid() != 0:
        pytest.skip(NEEDS_ROOT)
    seeded = seed_base and "base: host" not in (config or "") and "executor: slurm" not in (config or "")
    if seeded:
        base_seed()  # before this agent's root exists
    root = Path(tempfile.mkdtemp(prefix=TEST_PREFIX, dir=parent))
    agent = AgentProcess(root=root, port=free_port(), scheme="https" if tls else "http",
                         unix=root / "agent.sock" if unix else None, env=dict(env or {}), nofile=nofile,
                         prefix=list(prefix or []), stop_jobs=stop_jobs)
    try:
        if seeded:
            publish_base(root)
        agent.user_token = create_token(root, "user", "tester")
        agent.admin_token = create_token(root, "admin", "test-admin")
        if config is not None or tls:
            text = (config or "") + ("tls: true\n" if tls else "")
            (root / "config").mkdir(parents=True, exist_ok=True)
            (root / "config" / "agent.yml").write_text(text)
        yield agent.start(timeout=60 if seeded or "base: host" in (config or "") else 900)  # builds its base first
    finally:
        agent.stop()
        if not agent.stop_jobs and leftovers(agent.root):  # jobs it left running, on purpose
            _stop_jobs_left(agent)
        left = leftovers(agent.root)
        if left:
            force_cleanup(agent.root)
        agent.remove()
    assert not left, f"the agent left things behind: {left}"


def _stop_jobs_left(agent: AgentProcess) -> None:
    agent.stop_jobs = True
    try:
        agent.start()
    except RuntimeError:
        return  # it would not start: force_cleanup removes what is left
    agent.stop()


def sweep_cgroups(parent: str) -> None:
    """Remove every cgroup under an in-process service's cgroup parent, then the parent: a
    teardown that fails when one cannot go (force_cleanup is the forgiving one)."""
    from joblet_agent.sandbox import cgroups

    driver = cgroups.detect(parent)
    for name in driver.leftovers():
        driver.open(name).remove()
    driver.remove_parent()


def force_cleanup(root: Path) -> None:
    """Kill and remove whatever an agent on `root` left (a failed test's), with the agent's own
    cgroup and network code: nothing of it outlives the test."""
    from joblet_agent.config import NetworkConfig
    from joblet_agent.network.bridge import NetworkManager
    from joblet_agent.paths import AgentPaths
    from joblet_agent.sandbox import cgroups

    paths = AgentPaths.at(root)
    driver = cgroups.detect(paths.cgroup_parent())
    for name in driver.leftovers():
        with contextlib.suppress(Exception):
            driver.open(name).remove()
    with contextlib.suppress(Exception):
        driver.remove_parent()
    network = NetworkManager(paths, NetworkConfig())
    with contextlib.suppress(Exception):
        network.close()


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

    def record(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/jobs/{job_id}").json()

    def events(self, job_id: str, after: int = 0, follow: bool = True, timeout: float = 120) -> list[dict[str, Any]]:
        r = self.call("GET", f"/v1/jobs/{job_id}/events", params={"follow": str(follow).lower(), "after": after},
                      stream=True, timeout=timeout)
        assert r.status_code == 200, r.text
        return [json.loads(line) for line in r.iter_lines() if line]

    def run(self, **body: Any) -> "Result":
        """Submit, follow to the exit event, then settle: the job's cleanup is over on return."""
        job_id = self.submit(**body)
        events = self.events(job_id)
        self.settle(job_id)
        return Result(job_id, self.record(job_id), events)

    def settle(self, job_id: str) -> None:
        """A stop returns once the job is cleaned up (its cgroup, stage and folder go after its exit
        event); on a job that has ended it does nothing else."""
        r = self.call("POST", f"/v1/jobs/{job_id}/stop")
        assert r.status_code == 200, r.text

    def wait_for_output(self, job_id: str, text: str, timeout: float = 30) -> str:
        """The job's stdout once it contains `text`; fails at once if the job ends without it."""
        def printed() -> str:
            events = self.events(job_id, follow=False)
            out = "".join(e["data"] for e in events if e["type"] == "stdout")
            ended = any(e["type"] == "exit" for e in events)
            assert text in out or not ended, \
                f"job {job_id} ended before printing {text!r}: {self.record(job_id)}\n{out}"
            return out if text in out else ""
        return wait_until(printed, timeout, message=f"job {job_id} did not print {text!r}")

    def wait_for_status(self, job_id: str, *statuses: str, timeout: float = 60,
                        interval: float = 0.05) -> dict[str, Any]:
        """The job's record once its status is one of `statuses` (by default: any finished one)."""
        wanted = statuses or FINISHED
        return wait_until(lambda: (r := self.record(job_id))["status"] in wanted and r, timeout, interval,
                          message=f"job {job_id} never reached {' or '.join(wanted)}")


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


def leftovers(root: Path, running: bool = False) -> list[str]:
    """Mounts, cgroups and job folders an agent on `root` left behind. With `running`, the agent
    is still up, and the cgroups of its sandbox stages waiting for a job (`stage-*`) are its own."""
    found = []
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {ln.split()[4]}" for ln in f if str(root) in ln.split()[4]]
    jobs = root / "jobs"
    if jobs.exists():
        found += [f"folder {p}" for p in jobs.iterdir()]
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


def host_processes_with(marker: str) -> list[int]:
    """Host pids (the host's /proc sees every namespace) whose command line, its arguments joined
    by spaces, contains `marker`; never this test process itself."""
    found = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        pid = int(path.split("/")[2])
        try:
            with open(path, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and pid != os.getpid():
            found.append(pid)
    return found

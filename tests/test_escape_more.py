"""More of issue 6's escape suite: the attacks test_escape_production.py does not try yet.

Same conventions: each test runs a small probe (tests/escape/<name>.py, or a C program compiled at
test time) INSIDE a real job through the real agent; the probe exits 0 and prints PROBE_OK only if
the attack failed, and prints "held:"/"BROKEN:" lines that become the failure message. The probes
are harmless if the sandbox fails: loops are bounded, anything created stays in the job's own
/work or /tmp, nothing is written to /proc, /sys or cgroupfs, and no probe signals a process
other than its own children (the host signals one probe itself, to tell it that it has looked).

The resource attacks (fork bomb, memory bomb, CPU spin) also check the host side: the job ended
the way the limit says, its cgroup is gone, no process of it survives (found by a marker in its
argv: counting all host processes is not reliable while other test sessions run), and the agent
still answers and runs the next job. The CPU test checks a share of CPU time, never a speed.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import shutil
import signal
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentproc import AgentProcess, Api, Result, create_token, host_processes_with, leftovers, running_agent
from test_escape_production import ESCAPE, assert_held, force_remove_job, job_dirs_on_host, kill_leftovers, run_probe

pytestmark = pytest.mark.root

# ---- helpers ----------------------------------------------------------------------------------


def upload(name: str, content: bytes, mode: int = 0o644) -> dict[str, Any]:
    return {"path": name, "content_b64": base64.b64encode(content).decode(), "mode": mode}


def probe_command_job(api: Api, name: str, marker: str, env: dict[str, str], **body: Any) -> str:
    """Submit tests/escape/<name>.py as `python3 <name>.py <marker>` (cwd /work, probelib.py beside
    it), so that every process of the probe carries `marker` in its argv, visible from the host."""
    uploads = [upload("probelib.py", (ESCAPE / "probelib.py").read_bytes()),
               upload(f"{name}.py", (ESCAPE / f"{name}.py").read_bytes())]
    return api.submit(command=["python3", f"{name}.py", marker], env=env, uploads=uploads, **body)


def finish_job(api: Api, job_id: str) -> Result:
    events = api.events(job_id)
    api.settle(job_id)
    return Result(job_id, api.call("GET", f"/v1/jobs/{job_id}").json(), events)


def job_cgroups(agent: AgentProcess, job_id: str) -> list[str]:
    """The job's cgroup directories (job-<id> below the agent's jnb-<hash> parent) still present in
    any hierarchy; [] once the agent removed them."""
    return [item for item in leftovers(agent.root) if job_id in item]


def assert_gone(agent: AgentProcess, job_id: str, marker: str, result: Result) -> None:
    assert result.record["status"] not in ("PENDING", "RUNNING"), result.explain()
    left = job_cgroups(agent, job_id)
    assert not left, f"the job's cgroup or folder outlived it: {left}"
    survivors = host_processes_with(marker)
    assert not survivors, f"processes of the job outlived it: host pids {survivors}\n{result.explain()}"


def assert_agent_serves(api: Api, agent: AgentProcess) -> None:
    """The agent is alive, answers health, and runs a next job to its end."""
    assert agent.proc is not None and agent.proc.poll() is None, "the agent died"
    r = api.call("GET", "/v1/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    after = api.run(command=["sh", "-c", "echo next job runs"])
    assert after.record["status"] == "COMPLETED" and after.stdout == "next job runs\n", after.explain()


# ---- resources: fork bomb, memory bomb, CPU spin ----------------------------------------------

def test_fork_bomb_is_stopped_by_the_pids_limit(api: Api, agent: AgentProcess) -> None:
    """pids = 64: the bomb's fork() fails with EAGAIN after fewer than 64 children, far from the
    probe's own bound of 10,000; the job then ends normally, its cgroup is removed, and none of its
    processes survives on the host."""
    marker = f"jnb-forkbomb-{uuid.uuid4().hex}"
    try:
        job = probe_command_job(api, "fork_bomb", marker, {"PROBE_PIDS": "64", "PROBE_MAX_FORKS": "10000"},
                                limits={"pids": 64, "timeout_s": 120})
        result = finish_job(api, job)
        assert_held(result)
        assert_gone(agent, job, marker, result)
        assert_agent_serves(api, agent)
    finally:
        kill_leftovers(marker)


def test_memory_bomb_ends_as_oom_without_hurting_the_agent(api: Api, agent: AgentProcess) -> None:
    """memory_mb = 64; the bomb touches up to 512 MiB. The memory cgroup kills it: the job ends
    FAILED with reason "oom" after it had started allocating, and the agent still answers health
    and runs the next job."""
    marker = f"jnb-membomb-{uuid.uuid4().hex}"
    try:
        job = probe_command_job(api, "memory_bomb", marker, {"PROBE_MAX_MB": "512", "PROBE_CHUNK_MB": "8"},
                                limits={"memory_mb": 64, "timeout_s": 120})
        result = finish_job(api, job)
        assert (result.record["status"], result.record["reason"]) == ("FAILED", "oom"), result.explain()
        assert "allocated 16 MiB" in result.stdout, f"killed before it allocated anything:\n{result.explain()}"
        assert "not killed" not in result.stdout and "allocated 128 MiB" not in result.stdout, result.explain()
        peak = result.record["usage"]["memory_peak_bytes"]
        assert peak is None or peak <= (64 + 1) << 20, f"the job's memory peaked at {peak >> 20} MiB over its 64 MiB"
        assert_gone(agent, job, marker, result)
        assert_agent_serves(api, agent)
    finally:
        kill_leftovers(marker)


def test_cpu_spin_is_throttled_by_cpu_percent(api: Api, agent: AgentProcess) -> None:
    """cpu_percent = 20 (a fifth of one CPU); two processes spin for 3 s of wall time.

    This is a claim about a resource limit, not about speed: unthrottled, two spinners use about
    2 CPU-seconds per wall second (1 on a one-CPU host), so usage.cpu_s / (ended_at - started_at)
    would be near 1 or 2. Under the CFS quota the job gets at most 20 ms of CPU per 100 ms period,
    i.e. a ratio near 0.2 plus the interpreter's start-up. The bound of 0.6 leaves three times the
    quota for start-up and accounting jitter, and is still well below what one unthrottled spinner
    alone would use. Nothing here depends on how fast the host is."""
    marker = f"jnb-cpuspin-{uuid.uuid4().hex}"
    try:
        job = probe_command_job(api, "cpu_spin", marker, {"PROBE_SPIN_S": "3", "PROBE_SPINNERS": "2"},
                                limits={"cpu_percent": 20, "timeout_s": 120})
        result = finish_job(api, job)
        record = result.record
        assert record["status"] == "COMPLETED" and "spun" in result.stdout, result.explain()
        wall = record["ended_at"] - record["started_at"]
        cpu = record["usage"]["cpu_s"]
        assert cpu is not None and wall >= 3, result.explain()
        ratio = cpu / wall
        print(f"cpu_s {cpu:.2f} over {wall:.2f}s of wall time: ratio {ratio:.2f}")
        assert ratio < 0.6, (f"a job limited to 20% of a CPU used {cpu:.2f} CPU-seconds in {wall:.2f}s "
                             f"(ratio {ratio:.2f}): the cpu_percent limit does not throttle it\n{result.explain()}")
        assert cpu > 0.05, f"the job reports almost no CPU time: usage is not measured\n{result.explain()}"
        assert_gone(agent, job, marker, result)
    finally:
        kill_leftovers(marker)


def test_stop_ends_a_throttled_spinning_job(api: Api, agent: AgentProcess) -> None:
    """A job spinning under cpu_percent = 20 whose processes all ignore SIGTERM: a stop still ends
    it (SIGKILL after the grace period), with no survivor and no cgroup left."""
    marker = f"jnb-cpuspin-{uuid.uuid4().hex}"
    try:
        job = probe_command_job(api, "cpu_spin", marker,
                                {"PROBE_SPIN_S": "300", "PROBE_SPINNERS": "2", "PROBE_IGNORE_TERM": "1"},
                                limits={"cpu_percent": 20, "timeout_s": 600})
        api.wait_for_output(job, "spinning in 2 processes")
        assert host_processes_with(marker), "the host cannot see the spinners: this test would prove nothing"
        r = api.call("POST", f"/v1/jobs/{job}/stop")
        assert r.status_code == 200, r.text
        result = finish_job(api, job)
        assert (result.record["status"], result.record["reason"]) == ("STOPPED", "stopped"), result.explain()
        assert "spun" not in result.stdout, "the spin ran to its end: the stop did nothing"
        assert_gone(agent, job, marker, result)
    finally:
        kill_leftovers(marker)


# ---- foreign syscall ABIs -------------------------------------------------------------------

@pytest.fixture(scope="module")
def foreign_syscalls_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if platform.machine() != "x86_64":
        pytest.skip("i386/x32 syscalls exist on x86_64 only")
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the foreign-syscall probe: scripts/install.sh installs it")
    out = tmp_path_factory.mktemp("foreign") / "foreign_syscalls"
    static = ["-static"] if any(Path(d, "libc.a").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64",
                                                                       "/usr/lib")) else []
    subprocess.run([gcc, *static, "-O0", "-o", str(out), str(ESCAPE / "foreign_syscalls.c")], check=True)
    # the probe must be able to fail: outside any filter, int 0x80 reaches the kernel here
    unfiltered = subprocess.run([str(out)], capture_output=True, text=True, timeout=30)
    if "i386 getpid returned" not in unfiltered.stdout:
        pytest.skip(f"this kernel has no i386 entry at all (no IA32 emulation): {unfiltered.stdout}")
    return out.read_bytes()


def test_i386_and_x32_syscalls_are_killed(api: Api, foreign_syscalls_binary: bytes) -> None:
    result = api.run(command=["./foreign_syscalls"], uploads=[upload("foreign_syscalls", foreign_syscalls_binary, 0o755)])
    assert "native getpid returned" in result.stdout, f"the probe did not run:\n{result.explain()}"
    assert_held(result)


# ---- crashes -----------------------------------------------------------------------------------

def test_crash_leaves_no_core_dump(api: Api) -> None:
    result = run_probe(api, "core_dump")
    assert_held(result)
    assert result.record["exit_code"] == 0 and not result.record["signal"], result.explain()
    r = api.call("GET", f"/v1/jobs/{result.id}/files/core")
    assert r.status_code == 404, "a core file was copied out of /work"


# ---- the agent's unix socket ------------------------------------------------------------------

class UnixApi:
    """Just enough of Api for run_probe, over an agent's unix socket."""

    def __init__(self, sock: Path, token: str) -> None:
        self.client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://agent",
                                   headers={"Authorization": f"Bearer {token}"}, timeout=120)

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.client.request(method, path, **kw)

    def submit(self, **body: Any) -> str:
        r = self.call("POST", "/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def run(self, **body: Any) -> Result:
        job_id = self.submit(**body)
        r = self.call("GET", f"/v1/jobs/{job_id}/events", params={"follow": "true", "after": 0})
        assert r.status_code == 200, r.text
        events = [json.loads(line) for line in r.text.splitlines() if line]
        return Result(job_id, self.call("GET", f"/v1/jobs/{job_id}").json(), events)


@pytest.fixture
def unix_agent() -> Iterator[tuple[AgentProcess, Path, str]]:
    """A second agent that listens on a unix socket only (as in test_auth.py)."""
    with running_agent(unix=True) as own:
        assert own.unix is not None and stat.S_ISSOCK(own.unix.lstat().st_mode)
        yield own, own.unix, create_token(own.root, "user")


def test_cannot_reach_the_agents_unix_socket_or_tcp_port(agent: AgentProcess,
                                                          unix_agent: tuple[AgentProcess, Path, str]) -> None:
    """A job of the unix-socket agent tries that agent's own socket (its host path does not exist
    in the sandbox) and the TCP port of the session's main agent on 127.0.0.1 (refused: the job's
    loopback is its own)."""
    _own, sock, token = unix_agent
    uapi = UnixApi(sock, token)
    health = uapi.call("GET", "/v1/health")
    assert health.status_code == 200, health.text
    env = {"PROBE_AGENT_SOCKET": str(sock), "PROBE_AGENT_PORT": str(agent.port)}
    try:
        assert_held(run_probe(uapi, "agent_socket", env=env))  # type: ignore[arg-type]
        assert uapi.call("GET", "/v1/health").status_code == 200
    finally:
        uapi.client.close()


# ---- planted special files: uploads and the copy of /work ------------------------------------

def job_folders(agent: AgentProcess) -> set[str]:
    """Every job folder of the agent (jobs/<id> while it runs, state/jobs/<id> after)."""
    return {str(p) for d in (agent.root / "jobs", agent.root / "state" / "jobs") if d.is_dir() for p in d.iterdir()}


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1777, 0o6777, 0o104755, 0o020666, 0o060666, 0o010644,
                                  0o140777])
def test_upload_with_setuid_or_device_mode_is_refused(api: Api, agent: AgentProcess, mode: int) -> None:
    """Uploads make regular files only: a setuid, setgid or sticky bit, or file-type bits (a char or
    block device, a FIFO, a socket), are refused with 400 and no job (nor folder) is created."""
    before = {j["id"] for j in api.call("GET", "/v1/jobs").json()}
    folders = job_folders(agent)
    r = api.call("POST", "/v1/jobs", json={"command": ["true"], "uploads": [upload("planted", b"#!/bin/sh\nid\n", mode)]})
    assert r.status_code == 400, f"mode {mode:#o}: {r.status_code} {r.text}"
    assert "mode" in r.text, r.text
    assert {j["id"] for j in api.call("GET", "/v1/jobs").json()} == before, "a refused request made a job"
    assert job_folders(agent) <= folders, f"a refused request left folders: {job_folders(agent) - folders}"


def test_fifo_socket_and_setuid_files_in_work_are_not_copied_out(api: Api, agent: AgentProcess) -> None:
    """The agent copies /work out as root. What a job leaves there must come out as regular files
    and folders only, with no setuid, setgid or sticky bit; a FIFO, a socket and a symlink are not
    downloadable (404), and the ordinary file is (positive control)."""
    result = api.run(script=(ESCAPE / "plant_special_files.py").read_text())
    try:
        assert result.record["status"] == "COMPLETED" and "planted" in result.stdout, result.explain()
        assert "suid: -rwsr-xr-x" in result.stdout, f"the job could not even set the bit:\n{result.stdout}"
        dirs = job_dirs_on_host(agent, result.id)
        assert dirs, "the job's /work copy is not under the agent's root: update job_dirs_on_host"
        bad = []
        for d in dirs:
            for dirpath, dirnames, files in os.walk(d):
                for name in dirnames + files:
                    st = os.lstat(os.path.join(dirpath, name))
                    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)) or st.st_mode & 0o7000:
                        bad.append(f"{os.path.join(dirpath, name)} {stat.filemode(st.st_mode)}")
        assert not bad, f"the agent's copy keeps special files or bits on the host: {bad}"
        answers = {name: api.call("GET", f"/v1/jobs/{result.id}/files/{name}", timeout=10).status_code
                   for name in ("fifo", "sock", "link", "ok.txt")}
        assert answers == {"fifo": 404, "sock": 404, "link": 404, "ok.txt": 200}, answers
    finally:
        force_remove_job(api, agent, result.id)


# ---- seccomp argument rules, inside a real job -------------------------------------------------

def test_seccomp_argument_rules_hold_inside_a_job(api: Api) -> None:
    assert_held(run_probe(api, "seccomp_args"))


# ---- the sandbox's root ---------------------------------------------------------------------------

def host_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_mountinfo_shows_no_host_path_and_pid1_root_is_the_sandbox(api: Api, agent: AgentProcess) -> None:
    """Inside: no mount comes from the agent's root, the root mount is no host folder, "/.." is "/".
    From the host, while the probe waits: the job's pid 1 (the probe's parent, pid 1 in its pid
    namespace) has exactly the probe's root, and that root is not the host's."""
    root = os.path.realpath(agent.root)
    marker = f"jnb-mountinfo-{uuid.uuid4().hex}"
    try:
        job = probe_command_job(api, "mountinfo_root", marker, {"PROBE_AGENT_ROOT": root, "PROBE_WAIT_FOR_HOST": "1"},
                                limits={"timeout_s": 120})
        api.wait_for_output(job, "ready for the host")
        pids = host_processes_with(marker)
        assert len(pids) == 1, f"want exactly the probe on the host, found {pids}"
        probe = pids[0]
        init = int(host_status(probe)["PPid"])
        assert host_status(init)["NSpid"].split()[-1] == "1", f"the probe's parent {init} is not the job's pid 1"
        probe_root, init_root, host_root = (os.stat(f"/proc/{probe}/root/"), os.stat(f"/proc/{init}/root/"),
                                            os.stat("/"))
        assert (init_root.st_dev, init_root.st_ino) == (probe_root.st_dev, probe_root.st_ino), \
            "the job's pid 1 has another root than the job: /proc/1/root leads out of the sandbox"
        assert (probe_root.st_dev, probe_root.st_ino) != (host_root.st_dev, host_root.st_ino), \
            "the job runs in the host's root"
        os.kill(probe, signal.SIGUSR1)
        assert_held(finish_job(api, job))
    finally:
        kill_leftovers(marker)


def test_cannot_learn_host_paths_from_the_inits_command_line(api: Api) -> None:
    """PID 1 is a fork of the agent's launcher; its /proc/1/cmdline (world-readable) would name the
    agent's interpreter and cgroup parent, so it reads empty inside the job."""
    result = api.run(command=["sh", "-c", "cat /proc/1/cmdline; echo; cat /proc/1/comm"])
    assert result.record["status"] == "COMPLETED", result.explain()
    assert "joblet_agent" not in result.stdout and "jnb-" not in result.stdout.split("\n")[0], result.stdout
    assert result.stdout.split("\n")[1] == "jnb-init"

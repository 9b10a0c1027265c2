"""The Landlock layer in real sandboxes: a production job, a session and a runtime build print their
Landlock status (tests/escape/landlock_status.py), `GET /v1/health` says what the kernel has, and a
process of the job's own user placed by the test in the job's PID and network namespaces (outside
the job's Landlock domain) can be neither signalled nor reached on its abstract socket: there only
Landlock's scopes refuse. Unit tests of each rule: tests/test_landlock.py."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentproc import AgentProcess, Api, host_processes_with, running_agent
from joblet_agent.sandbox import landlock
from test_escape_production import assert_held, run_probe
from test_escape_session import run_probe_in_session
from test_runtimes import build
from waiting import wait_until

ESCAPE = Path(__file__).parent / "escape"
ABI = landlock.abi()
pytestmark = pytest.mark.root


def status_of(out: str) -> dict:
    line = next((ln for ln in out.splitlines() if ln.startswith("LANDLOCK ")), None)
    assert line is not None, out
    return json.loads(line[len("LANDLOCK "):])


def assert_enforced(status: dict, writable: tuple[str, ...] = ("/work", "/tmp", "/dev/shm"), tcp: bool = True) -> None:
    """What a sandbox on this kernel must show: every part the kernel has, and its writable places."""
    assert status["abi"] == ABI
    assert status["write_proc_self_comm"] == ("EACCES" if ABI >= 1 else "success"), status
    assert status["write_dev_null"] == "success", status
    assert status["create"] == {folder: "success" for folder in writable}, status
    refused = "EACCES" if ABI >= 4 and not tcp else "ECONNREFUSED"
    assert status["tcp_connect_loopback"] == refused, status
    if ABI >= 6:
        assert status["nested"] == {"before": "success", "restrict_self": "success", "after": "EPERM"}, status


def test_a_job_prints_its_landlock_status(api: Api) -> None:
    result = api.run(script=(ESCAPE / "landlock_status.py").read_text())
    assert result.record["status"] == "COMPLETED", result.explain()
    print(result.stdout)
    assert_enforced(status_of(result.stdout))


def test_an_agent_that_refuses_tcp_to_jobs_without_a_network() -> None:
    """network.none_tcp: refuse: Landlock's second lock on "none" jobs, no TCP bind or connect on
    any address (the loopback and network probes then expect EACCES before the namespace answers);
    a bridge job of the same agent is unaffected (tests/test_network.py)."""
    if ABI < 4:
        pytest.skip(f"the kernel's Landlock ABI is {ABI}: TCP rules need ABI 4")
    with running_agent("network:\n  none_tcp: refuse\n") as own:
        api = own.api()
        result = api.run(script=(ESCAPE / "landlock_status.py").read_text())
        assert result.record["status"] == "COMPLETED", result.explain()
        assert_enforced(status_of(result.stdout), tcp=False)
        for probe in ("loopback", "network_none"):
            assert_held(run_probe(api, probe, env={"PROBE_LANDLOCK_TCP": "1", "PROBE_AGENT_PORT": str(own.port)}))


def test_a_session_cell_has_the_same_landlock_domain(agent: AgentProcess, api: Api) -> None:
    out, _ = run_probe_in_session(api, "landlock_status", {})
    print(out)
    assert_enforced(status_of(out))


SPEC = """\
name: jnb-landlock
language: shell
version: "1"
architectures: [x86_64, aarch64]
build: {setup: setup.sh, network: none, timeout_s: 120, memory_mb: 256, disk_mb: 32}
mounts:
  - source: out
    target: /opt/runtimes/jnb-landlock/out
script: {command: [/bin/sh], suffix: .sh}
test:
  command: [/bin/sh, -c, "cat /opt/runtimes/jnb-landlock/out/made"]
"""
SETUP = """\
PROBE_WRITABLE="$RUNTIME_PREFIX" python3 /work/landlock_status.py
mkdir -p "$RUNTIME_PREFIX/out" && echo made > "$RUNTIME_PREFIX/out/made"
"""


def test_a_runtime_build_prints_its_landlock_status(module_agent: AgentProcess) -> None:
    """The builder: its install prefix is writable as well, the rest as in production."""
    admin = module_agent.api(module_agent.admin_token)
    record, events = build(admin, "jnb-landlock", spec=SPEC, files={
        "setup.sh": SETUP, "landlock_status.py": (ESCAPE / "landlock_status.py").read_text()})
    out = "".join(e["data"] for e in events if e["type"] == "stdout")
    print(out)
    assert record["status"] == "COMPLETED", (record, events)
    assert_enforced(status_of(out), writable=("/work", "/tmp", "/dev/shm", "/opt/runtimes/jnb-landlock"))
    assert admin.call("DELETE", "/v1/runtimes/jnb-landlock").status_code == 204


def test_health_says_which_landlock_parts_the_kernel_has(api: Api) -> None:
    body = api.call("GET", "/v1/health").json()
    assert body["landlock"] == landlock.status()
    assert body["landlock"]["abi"] == ABI and set(body) >= {"status", "version", "cgroup"}
    print(body["landlock"])


# ---- scopes: a process of the job's user, in the job's namespaces, outside its domain ---------------

PEER_JOB = r"""
import errno, os, socket, sys, time
marker = sys.argv[1]
def find():
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open(f"/proc/{p}/comm").read().strip() == "jnb-peer":
                    return int(p)
            except OSError:
                pass
deadline = time.monotonic() + 60
while (peer := find()) is None and time.monotonic() < deadline:
    time.sleep(0.05)
print("peer", peer, "uid", os.stat(f"/proc/{peer}").st_uid, "mine", os.getuid(), flush=True)
def attempt(fn, *args):
    try:
        fn(*args)
        return "success"
    except OSError as exc:
        return errno.errorcode[exc.errno]
print("kill", attempt(os.kill, peer, 0), flush=True)
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.settimeout(5)
    print("connect", attempt(s.connect, "\0" + marker), flush=True)
"""


def _setns(pid: int, kind: str, flag: int) -> None:
    fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, flag) != 0:
            raise OSError(ctypes.get_errno(), f"setns {kind}")
    finally:
        os.close(fd)


@pytest.fixture
def peer_in(request: pytest.FixtureRequest) -> Iterator:
    """Start a peer in the namespaces of the job process `job_pid`: forked from this test, joined to
    the job's PID and network namespaces, as the job's uid, named jnb-peer, listening on the abstract
    socket `marker`; it never enters any Landlock domain. Killed at the end (and with the job's PID
    namespace anyway)."""
    peers: list[int] = []

    def start(job_pid: int, marker: str) -> None:
        uid = os.stat(f"/proc/{job_pid}").st_uid
        r, w = os.pipe()                # the peer's host pid, from the middle process
        ready_r, ready_w = os.pipe()    # the peer listens: from the peer to the middle process
        pid = os.fork()
        if pid == 0:  # joins the namespaces; its child is the peer, inside the job's PID namespace
            try:
                os.close(r)
                _setns(job_pid, "net", 0x40000000)
                _setns(job_pid, "pid", 0x20000000)
                peer = os.fork()
                if peer == 0:
                    try:
                        os.close(w)
                        os.setgroups([])
                        os.setresgid(uid, uid, uid)
                        os.setresuid(uid, uid, uid)
                        ctypes.CDLL(None).prctl(15, b"jnb-peer", 0, 0, 0)
                        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        server.bind("\0" + marker)
                        server.listen(4)
                        os.write(ready_w, b"1")
                        os.close(ready_w)
                        time.sleep(120)
                    finally:
                        os._exit(0)
                os.close(ready_w)
                if os.read(ready_r, 1) == b"1":
                    os.write(w, str(peer).encode())
            finally:
                os._exit(0)
        os.close(w)
        os.close(ready_w)
        os.close(ready_r)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
        assert data.isdigit(), f"the peer did not start: {data!r}"
        peers.append(int(data))

    yield start
    for pid in peers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(ABI < 6, reason=f"this kernel's Landlock ABI is {ABI}: signal and abstract socket scopes need 6")
def test_a_job_cannot_signal_or_reach_a_process_outside_its_domain(api: Api, peer_in) -> None:
    marker = f"jnb-peer-{os.urandom(4).hex()}"
    job_id = api.submit(command=["python3", "-c", PEER_JOB, marker])
    job_pid = wait_until(lambda: next(iter(host_processes_with(marker)), None), timeout=60,
                         message="the job's process on the host")
    peer_in(job_pid, marker)
    events = api.events(job_id)
    out = "".join(e.get("data", "") for e in events if e["type"] == "stdout")
    print(out)
    fields = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    peer, _, uid, _, mine = fields["peer"].split()
    assert peer != "None" and uid == mine, out  # same user: DAC would let it signal the peer
    assert fields["kill"] == "EPERM", out
    assert fields["connect"] == "EPERM", out


EVERYDAY = r"""
import multiprocessing, os, pty, socket, subprocess
subprocess.run("echo out; echo err >&2; : > /dev/null; echo x | cat /dev/stdin > /dev/shm/y; rm /dev/shm/y",
               shell=True, check=True)
leader, follower = pty.openpty()
os.write(follower, b"x")
print("pty", os.read(leader, 1), os.ttyname(follower).startswith("/dev/pts/"))
os.mkfifo("/tmp/fifo"); os.unlink("/tmp/fifo")
with socket.socket(socket.AF_UNIX) as s:
    s.bind("/tmp/sock"); os.unlink("/tmp/sock")
with multiprocessing.Pool(2) as pool:
    print("pool", pool.map(abs, [-1, -2]))
with open("/dev/shm/x", "w") as f:
    f.write("x")
os.unlink("/dev/shm/x")
os.makedirs("/work/a/b"); os.rename("/work/a", "/work/c"); os.symlink("c", "/work/d")
print("done")
"""


def test_what_jobs_do_every_day_still_works(api: Api) -> None:
    """A pipe reopened by its path (/dev/stdin), /dev/null, a pty, a FIFO and a unix socket in /tmp, a
    process pool (its semaphores live in /dev/shm), folders made, renamed and linked in /work. (Not
    /dev/stdout: the job's output pipes belong to root, so reopening them was refused before.)"""
    result = api.run(script=EVERYDAY)
    assert result.record["status"] == "COMPLETED", result.explain()
    assert result.stdout.splitlines() == ["out", "pty b'x' True", "pool [1, 2]", "done"], result.explain()
    assert "err" in result.stderr

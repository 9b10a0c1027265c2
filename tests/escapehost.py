"""What the escape probes (tests/escape) need from the host, prepared once for every way they run.

A probe can only fail when the host has something to reach: a submount under /usr, a SysV shm
segment, an abstract unix socket, the agent's root and tokens, the host's users, addresses and
namespaces. `prepared(name, agent)` makes that for one probe and yields what the probe's run needs
(`env`, and `limits` where the probe tests one); everything it made is removed when the block ends,
also when the test fails. The job tests (test_escape_production.py) and the session tests
(test_escape_session.py) run the same probes with the same set-up from here.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import testrun
from agentproc import AgentProcess

NAMESPACES = ("mnt", "uts", "ipc", "net", "pid", "cgroup")
SANDBOX_HOSTNAME = "joblet"
Setup = dict[str, Any]   # {"env": {...}, "limits": {...}}: the run's body beside the probe


# ---- things on the host -------------------------------------------------------------------------

@contextlib.contextmanager
def usr_submount() -> Iterator[str]:
    """A tmpfs mounted under /usr on the host (rw, suid, dev there), so the sandbox must carry a real
    submount and make it read-only, nosuid and nodev like the rest of /usr. Every sandbox on the host
    sees it while it exists, another run's too: its name is not one the probes look for (jnb-test-),
    and it is in the run's ledger, so a killed run's is removed by the next run."""
    path = f"/usr/lib/jnb-usrmount-{uuid.uuid4().hex[:12]}"
    with testrun.owned("dir", path), testrun.owned("mount", path):
        os.mkdir(path, 0o755)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=755", "jnb-usrmount", path], check=True)
        yield path


@contextlib.contextmanager
def host_shm_segment() -> Iterator[int]:
    """A SysV shared memory segment on the host (IPC_PRIVATE, 0600), removed with IPC_RMID."""
    libc = ctypes.CDLL(None, use_errno=True)
    IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0, 0o1000, 0
    shmid = libc.shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0o600)
    assert shmid >= 0, os.strerror(ctypes.get_errno())
    try:
        assert any(line.split()[1] == str(shmid) for line in open("/proc/sysvipc/shm").read().splitlines()[1:])
        yield shmid
    finally:
        libc.shmctl(shmid, IPC_RMID, None)


@contextlib.contextmanager
def host_abstract_socket() -> Iterator[str]:
    """A listening abstract unix socket on the host that the host itself can connect to."""
    name = f"jnb-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0" + name)
    sock.listen(4)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect("\0" + name)
        yield name
    finally:
        sock.close()


def host_ipv4_addresses() -> list[str]:
    if not shutil.which("ip"):
        return []
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines() if not line.split()[3].startswith("127.")]


def file_capability_binaries() -> list[str]:
    if not shutil.which("getcap"):
        return []
    out = subprocess.run(["getcap", "-r", "/usr/bin", "/usr/sbin", "/usr/lib"], capture_output=True, text=True,
                         timeout=120).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# ---- one probe's set-up -------------------------------------------------------------------------

def _agent_paths(agent: AgentProcess) -> Setup:
    root = os.path.realpath(agent.root)
    paths = [root, f"{root}/state", f"{root}/state/tokens.json", f"{root}/client-config", f"{root}/jobs",
             str(agent.log_path), str(Path(__file__).resolve().parent.parent / "agent")]
    assert Path(root, "state", "tokens.json").exists(), "the tokens file moved: update this set-up"
    return {"env": {"PROBE_AGENT_PATHS": ":".join(paths), "PROBE_AGENT_ROOT": root}}


def _host_users() -> Setup:
    users = sorted({line.split(":")[0] for line in open("/etc/passwd") if line.strip()})
    return {"env": {"PROBE_HOST_USERS": ",".join(users),
                    "PROBE_HOST_PASSWD_SHA256": hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()}}


def _agent_pids(agent: AgentProcess) -> Setup:
    assert agent.proc is not None
    return {"env": {"PROBE_AGENT_PID": str(agent.proc.pid), "PROBE_TEST_PID": str(os.getpid())}}


def _namespaces() -> Setup:
    host = {ns: os.stat(f"/proc/self/ns/{ns}").st_ino for ns in NAMESPACES}
    return {"env": {"PROBE_HOST_NS": ",".join(f"{k}={v}" for k, v in host.items())}}


# Probes whose set-up is a value: name -> (agent -> setup)
PLAIN: dict[str, Callable[[AgentProcess], Setup]] = {
    "setuid": lambda agent: {"env": {"PROBE_FCAPS": ":".join(file_capability_binaries())}},
    "host_secrets": lambda agent: _host_users(),
    "agent_root": _agent_paths,
    "network_none": lambda agent: {"env": {"PROBE_AGENT_PORT": str(agent.port),
                                           "PROBE_HOST_ADDRS": ",".join(host_ipv4_addresses())}},
    "disk_fill": lambda agent: {"env": {"PROBE_DIRS": "/work:/tmp", "PROBE_FILL_MB": "32", "PROBE_DISK_MB": "8"},
                                "limits": {"disk_mb": 8}},
    "namespaces": lambda agent: _namespaces(),
    "hostname": lambda agent: {"env": {"PROBE_SANDBOX_HOSTNAME": SANDBOX_HOSTNAME,
                                       "PROBE_HOST_HOSTNAME": socket.gethostname()}},
    "environment": lambda agent: {"env": {"PROBE_HOST_ENV_NAMES": ",".join(sorted(os.environ)),
                                          "PROBE_REQUESTED": "kept"}},
    "kill_agent": _agent_pids,
    "proc_pids": _agent_pids,
}
# Probes whose set-up is something on the host while they run: name -> (context, thing -> env)
MADE: dict[str, tuple[Callable[[], Any], Callable[[Any], dict[str, str]]]] = {
    "readonly_system": (usr_submount, lambda path: {"PROBE_SUBMOUNT": path}),
    "sysv_ipc": (host_shm_segment, lambda shmid: {"PROBE_HOST_SHMID": str(shmid)}),
    "abstract_socket": (host_abstract_socket, lambda name: {"PROBE_ABSTRACT": name}),
}
# The probes that need the host prepared before they can fail (the rest need nothing).
PREPARED = sorted(PLAIN.keys() | MADE.keys())


@contextlib.contextmanager
def prepared(name: str, agent: AgentProcess) -> Iterator[Setup]:
    """The set-up of probe `name` ({"env": {}} for one that needs none), undone when the block ends."""
    if name in MADE:
        make, env_of = MADE[name]
        with make() as thing:
            yield {"env": env_of(thing)}
    elif name in PLAIN:
        yield PLAIN[name](agent)
    else:
        yield {"env": {}}

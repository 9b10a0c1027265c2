"""The escape suite against a session: a cell is just code in the same production sandbox.

Each probe of tests/escape runs as a cell of a fresh session (probelib.py uploaded into /work),
so it attacks from inside the runner's own process, with the session's descriptors, environment
and identity. A probe ends with sys.exit: 0 (and PROBE_OK) when every attack failed.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from agentproc import AgentProcess, Api

ESCAPE = Path(__file__).parent / "escape"
NAMESPACES = ("mnt", "uts", "ipc", "net", "pid", "cgroup")

pytestmark = pytest.mark.root


def _host_env(name: str, agent: AgentProcess) -> dict[str, str]:
    """What a probe needs to know about the host to tell it apart from the sandbox."""
    if name == "namespaces":
        host = {ns: os.stat(f"/proc/self/ns/{ns}").st_ino for ns in NAMESPACES}
        return {"PROBE_HOST_NS": ",".join(f"{k}={v}" for k, v in host.items())}
    if name == "hostname":
        return {"PROBE_SANDBOX_HOSTNAME": "joblet", "PROBE_HOST_HOSTNAME": socket.gethostname()}
    if name == "environment":
        return {"PROBE_HOST_ENV_NAMES": ",".join(sorted(os.environ)), "PROBE_REQUESTED": "kept"}
    if name == "kill_agent":
        assert agent.proc is not None
        return {"PROBE_AGENT_PID": str(agent.proc.pid), "PROBE_TEST_PID": str(os.getpid())}
    return {}


PROBES = ["readonly_root", "writable_mounts", "hardlinks", "pid1_reaper", "ptrace", "proc_masked", "proc_sys",
          "dev_minimal", "mknod", "no_sys_cgroupfs", "unprivileged", "dangerous_syscalls", "chroot",
          "mount_syscalls", "user_namespace", "loopback", "reaper_orphans", "seccomp_args", "namespaces",
          "hostname", "environment", "kill_agent"]


def _upload(path: Path) -> dict[str, Any]:
    return {"path": path.name, "content_b64": base64.b64encode(path.read_bytes()).decode(), "mode": 0o644}


def run_probe_in_session(api: Api, name: str, env: dict[str, str], code: str | None = None) -> tuple[str, list]:
    r = api.call("POST", "/v1/sessions", json={"env": env, "uploads": [_upload(ESCAPE / "probelib.py"),
                                                                        _upload(ESCAPE / f"{name}.py")]})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    try:
        r = api.call("POST", f"/v1/sessions/{sid}/cells", json={"code": code or (ESCAPE / f"{name}.py").read_text()})
        assert r.status_code == 201, r.text
        events = []
        with api.call("GET", f"/v1/sessions/{sid}/events", params={"follow": "true"}, stream=True, timeout=300) as resp:
            for line in resp.iter_lines():
                events.append(json.loads(line))
                if events[-1]["type"] in ("cell_end", "exit"):
                    break
    finally:
        api.call("DELETE", f"/v1/sessions/{sid}")
    out = "".join(e.get("data", "") for e in events if e["type"] in ("stdout", "stderr"))
    return out, events


@pytest.mark.parametrize("name", PROBES)
def test_probe_holds_when_run_as_a_session_cell(agent: AgentProcess, api: Api, name: str) -> None:
    out, events = run_probe_in_session(api, name, _host_env(name, agent))
    print(out)
    assert "PROBE_OK" in out, out
    errors = [e for e in events if e["type"] == "error"]
    assert [(e["ename"], e["evalue"]) for e in errors] == [("SystemExit", "0")], errors


def test_a_cells_subprocess_gets_only_0_1_2_and_no_host_descriptor(api: Api) -> None:
    """The fds probe, from a process the cell starts: what any program of the user's inherits."""
    code = "import subprocess, sys\nsubprocess.run([sys.executable, '/work/fds.py'], check=True)"
    out, events = run_probe_in_session(api, "fds", {}, code)
    assert "PROBE_OK" in out, out
    assert events[-1]["status"] == "ok", events


def test_the_runners_own_descriptors_are_its_pipes_and_dev_null(api: Api) -> None:
    code = ("import os, stat\nfor fd in sorted(int(f) for f in os.listdir('/proc/self/fd')):\n"
            "    try:\n        print(fd, os.readlink(f'/proc/self/fd/{fd}'))\n    except OSError:\n        pass")
    out, _ = run_probe_in_session(api, "fds", {}, code)
    targets = [line.split(" ", 1)[1] for line in out.splitlines() if " " in line]
    assert targets and all(t.startswith("pipe:") or t in ("/dev/null", "/proc/self/fd") or t.startswith("/proc/")
                           for t in targets), out

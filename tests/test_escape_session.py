"""The escape suite against a session: a cell is just code in the same production sandbox.

Each probe of tests/escape runs as a cell of a fresh session (probelib.py uploaded into /work),
so it attacks from inside the runner's own process, with the session's descriptors, environment
and identity. The probes that need the host prepared (tests/escapehost.py) get the same set-up as
their job versions in test_escape_production.py. A probe ends with sys.exit: 0 (and PROBE_OK) when
every attack failed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from agentproc import AgentProcess, Api
import escapehost

ESCAPE = Path(__file__).parent / "escape"

pytestmark = pytest.mark.root


PROBES = ["readonly_root", "writable_mounts", "hardlinks", "pid1_reaper", "ptrace", "proc_masked", "proc_sys",
          "dev_minimal", "mknod", "no_sys_cgroupfs", "unprivileged", "dangerous_syscalls", "chroot",
          "mount_syscalls", "user_namespace", "loopback", "reaper_orphans", "seccomp_args"]
# ...and, with the host prepared as for their job versions: readonly_system, setuid, host_secrets,
# agent_root, sysv_ipc, abstract_socket, network_none, disk_fill, namespaces, hostname, ...
JOB_ONLY = {"proc_pids": "counts one thread per process; the runner reads the cell's output on a thread"}
PREPARED = [name for name in escapehost.PREPARED if name not in JOB_ONLY]


def _upload(path: Path) -> dict[str, Any]:
    return {"path": path.name, "content_b64": base64.b64encode(path.read_bytes()).decode(), "mode": 0o644}


def run_probe_in_session(api: Api, name: str, env: dict[str, str], code: str | None = None,
                         limits: dict[str, Any] | None = None) -> tuple[str, list]:
    body = {"env": env, "uploads": [_upload(ESCAPE / "probelib.py"), _upload(ESCAPE / f"{name}.py")]}
    r = api.call("POST", "/v1/sessions", json={**body, "limits": limits} if limits else body)
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


@pytest.mark.parametrize("name", PROBES + PREPARED)
def test_probe_holds_when_run_as_a_session_cell(agent: AgentProcess, api: Api, name: str) -> None:
    with escapehost.prepared(name, agent) as setup:
        out, events = run_probe_in_session(api, name, setup["env"], limits=setup.get("limits"))
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

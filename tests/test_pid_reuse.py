"""A stop never reaches a process by a PID that has changed hands (issue 13, item 1).

After stage 1 reaps a job's init it copies /work out, and the record stays RUNNING meanwhile; a
stop in that window went to whatever process had been given the init's old PID since. Here the
agent runs as PID 1 of a PID namespace of this test's own (tests/pidns.py), so the test can hand
the init's old PID to a process of its own (ns_last_pid, written from inside that namespace: no
other process on the host is touched) while the copy of 200,000 files runs, then stop the job.
The planted process must still be alive afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agentproc import AgentProcess, running_agent
from waiting import wait_until

pytestmark = pytest.mark.root

FILES = 100_000
PLANT = r"""
import os, sys
target, marker = int(sys.argv[1]), sys.argv[2]
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(target - 1))
pid = os.fork()
if pid == 0:
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)", marker])
print(pid)
"""
MAKE_FILES = f"""
import os
os.mkdir("many")
for i in range({FILES}):
    os.close(os.open(f"many/{{i}}", os.O_CREAT | os.O_WRONLY, 0o600))
print("made", flush=True)
"""


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def nspid(host_pid: int) -> list[int]:
    status = Path(f"/proc/{host_pid}/status").read_text()
    return [int(x) for x in next(ln for ln in status.splitlines() if ln.startswith("NSpid:")).split()[1:]]


def alive(host_pid: int) -> bool:
    try:
        state = Path(f"/proc/{host_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def host_pids_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def plant(agent_pid: int, target: int, marker: str) -> int | None:
    """A sleeping process of the test's own at PID `target` of the agent's namespace; its host pid
    (None if another fork of that namespace took the PID first)."""
    out = subprocess.run(["nsenter", f"--target={agent_pid}", "--pid", "--", sys.executable, "-c", PLANT,
                          str(target), marker], capture_output=True, text=True, timeout=30, check=True)
    for host_pid in host_pids_with(marker):
        if alive(host_pid) and nspid(host_pid)[1] == target:
            return host_pid
        os.kill(host_pid, 9)
    assert out.stdout.strip(), out.stderr
    return None


def test_a_stop_after_the_init_ended_never_signals_the_process_that_got_its_pid() -> None:
    marker = f"jnb-planted-{uuid.uuid4().hex}"
    config = f"quotas: {{work_files: {FILES + 10}, kept_files_per_user: {FILES + 10}}}\n"
    prefix = [sys.executable, str(Path(__file__).with_name("pidns.py"))]
    try:
        with running_agent(config, prefix=prefix) as agent:
            run_the_attack(agent, marker)
    finally:
        for host_pid in host_pids_with(marker):
            os.kill(host_pid, 9)


def run_the_attack(agent: AgentProcess, marker: str) -> None:
    assert agent.proc is not None
    agent_pid = children(agent.proc.pid)[0]  # pidns.py's one child: the agent, PID 1 of its namespace
    assert nspid(agent_pid)[1:] == [1], "the agent is not PID 1 of a namespace of the test's own"
    api = agent.api()
    job = api.submit(script=MAKE_FILES, limits={"disk_mb": 2048, "timeout_s": 600})
    inits = wait_until(lambda: [p for p in descendants(agent_pid) if _comm(p) == "jnb-init"], timeout=60)
    init_host, init_pid = inits[0], nspid(inits[0])[1]  # its PID in the agent's namespace
    api.wait_for_output(job, "made", timeout=300)
    wait_until(lambda: not alive(init_host), timeout=300, interval=0.01, message="the init never ended")
    planted = None
    for _ in range(20):  # the launcher forks stages meanwhile: one of them may get the PID first
        planted = plant(agent_pid, init_pid, marker)
        if planted is not None:
            break
    assert planted is not None, f"could not plant a process on PID {init_pid}"
    stopped = api.call("POST", f"/v1/jobs/{job}/stop").json()
    assert stopped["status"] == "RUNNING", f"the copy window closed before the stop: {stopped}"
    record = api.wait_for_status(job, timeout=300)
    assert record["status"] in ("COMPLETED", "STOPPED"), record
    assert alive(planted), (f"the stop killed the process that got the init's PID {init_pid} after "
                            f"the init ended (host pid {planted})")
    api.call("DELETE", f"/v1/jobs/{job}")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""

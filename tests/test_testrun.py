"""The run ledger (tests/testrun.py): what a killed run made is removed by the next run's sweep,
what a live run made is never touched, and claimed address blocks are never handed out twice.

Each "run" here is a child process that makes real objects (a network namespace joined by a veth)
through `netlab.joined_namespace`, with its ledger in a folder of the test's own.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import testrun
from agentproc import TEST_PREFIX

pytestmark = pytest.mark.root

TESTS = Path(__file__).parent

# A run: claims a /30, makes a namespace joined by a veth with a process in it, says "ready", and
# ends its with-block (removing all three) when its stdin says so. "claim <within> <prefixlen>"
# asks for one more claim.
RUN = r'''
import subprocess, sys, testrun
from netlab import joined_namespace
name, veth = sys.argv[1], sys.argv[2]
block = testrun.claim("198.18.0.0/17", 30)
with joined_namespace(name, veth, str(block[1]), str(block[2]), 30):
    inside = subprocess.Popen(["nsenter", f"--net=/run/netns/{name}", "sleep", "600"], start_new_session=True)
    print("ready", testrun.RUN_ID, inside.pid, flush=True)
    for line in sys.stdin:
        if line.startswith("claim "):
            print("claimed", testrun.claim(line.split()[1], int(line.split()[2])), flush=True)
        else:
            break
print("done", flush=True)
'''


@pytest.fixture
def ledgers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(testrun, "LEDGERS", tmp_path)
    return tmp_path


Run = tuple[subprocess.Popen[str], str, str, str, int]


def start_run(ledgers: Path) -> Run:
    tag = secrets.token_hex(3)
    name, veth = f"{TEST_PREFIX}sw-{tag}", f"{TEST_PREFIX}s{tag[:5]}"
    proc = subprocess.Popen([sys.executable, "-c", RUN, name, veth], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=TESTS, env=dict(os.environ, JNB_TEST_LEDGERS=str(ledgers)),
                            start_new_session=True)
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    assert ready[:1] == ["ready"], f"the run did not start: {ready} {proc.wait()}"
    return proc, ready[1], name, veth, int(ready[2])


def exists(name: str, veth: str, inside: int) -> tuple[bool, bool, bool]:
    """(namespace, veth, the process in the namespace) exist; a reaped zombie does not count."""
    try:
        alive = Path(f"/proc/{inside}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        alive = False
    return os.path.exists(f"/run/netns/{name}"), os.path.exists(f"/sys/class/net/{veth}"), alive


@pytest.fixture
def runs(ledgers: Path) -> Iterator[list[Run]]:
    """Runs started by a test; whatever happens, none outlives it and nothing of theirs is left."""
    started: list[Run] = []
    yield started
    for proc, _, name, veth, _ in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        testrun.remove_link(veth)
        testrun.remove_netns(name)


def test_a_killed_runs_namespace_and_veth_are_swept(ledgers: Path, runs: list) -> None:
    runs.append(start_run(ledgers))
    proc, run_id, name, veth, inside = runs[-1]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert exists(name, veth, inside) == (True, True, True), "a killed run leaves its objects (the sweep is needed)"
    assert sorted(testrun.sweep()) == [f"link {veth}", f"netns {name}"]
    assert exists(name, veth, inside) == (False, False, False)
    assert sorted(p.name for p in ledgers.iterdir()) == [".claims"], "the dead run's ledger and lock went too"


def test_a_live_runs_objects_are_not_swept_and_its_own_end_removes_them(ledgers: Path, runs: list) -> None:
    runs.append(start_run(ledgers))
    proc, run_id, name, veth, inside = runs[-1]
    assert testrun.sweep() == []
    assert exists(name, veth, inside) == (True, True, True)
    assert (ledgers / f"{run_id}.lock").exists() and (ledgers / f"{run_id}.ledger").exists()
    out, _ = proc.communicate("end\n", timeout=120)
    assert out.strip() == "done"
    assert exists(name, veth, inside) == (False, False, False)
    assert testrun.sweep() == [], "nothing was left for a sweep"


def test_claims_avoid_other_runs_claims_and_the_hosts_addresses(ledgers: Path, runs: list) -> None:
    runs += [start_run(ledgers), start_run(ledgers)]
    first, second = runs[0][0], runs[1][0]
    assert first.stdin is not None and first.stdout is not None
    assert second.stdin is not None and second.stdout is not None
    claimed = []
    for proc in (first, second):  # a /25 of 198.18.0.0/24 each: the second run gets the other one
        proc.stdin.write("claim 198.18.0.0/24 25\n")
        proc.stdin.flush()
        claimed.append(proc.stdout.readline().split())
    assert sorted(c[1] for c in claimed) == ["198.18.0.0/25", "198.18.0.128/25"], claimed
    first.stdin.write("claim 126.0.0.0/7 8\n")  # 127.0.0.0/8 holds the host's 127.0.0.1
    first.stdin.flush()
    assert first.stdout.readline().split() == ["claimed", "126.0.0.0/8"]

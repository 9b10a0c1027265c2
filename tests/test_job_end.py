"""A job's end and its cleanup, which follows its exit event (issue 11: nobody waits for the cgroup
or the stage to go), and jobs in numbers: many at once, many in a row, nothing left behind.

No timing claims: these check order and completeness only (benchmarks/goals.py measures speed).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from agentproc import AgentProcess, Api, leftovers, running_agent
from waiting import wait_until
from joblet_agent.sandbox.launcher import POOL_SIZE

pytestmark = pytest.mark.root

# Many files on the job's /tmp make its stage's teardown (the tmpfs going with its mount namespace)
# take a while, so a call right after the exit event meets a cleanup that is still under way.
SLOW_TEARDOWN = ("import os\nfor i in range(20000):\n    open(f'/tmp/f{i}', 'w').close()\n"
                 "open('/work/kept.txt', 'w').write('kept')\nprint('wrote', flush=True)\n")


def _left(agent: AgentProcess, job_id: str) -> list[str]:
    return [item for item in leftovers(agent.root) if job_id in item]


def _ended(api: Api, job_id: str) -> dict[str, Any]:
    events = api.events(job_id)
    assert events[-1]["type"] == "exit", events[-3:]
    return events[-1]


def test_cleanup_completes_after_the_exit_event_on_its_own(agent, api):
    job_id = api.submit(script=SLOW_TEARDOWN)
    assert _ended(api, job_id)["status"] == "COMPLETED"
    wait_until(lambda: not _left(agent, job_id), message=lambda: _left(agent, job_id))


@pytest.mark.parametrize("call", ["stop", "delete"])
def test_a_stop_or_delete_after_the_exit_event_returns_once_the_cleanup_is_over(agent, api, call):
    job_id = api.submit(script=SLOW_TEARDOWN)
    assert _ended(api, job_id)["status"] == "COMPLETED"
    if call == "stop":
        r = api.call("POST", f"/v1/jobs/{job_id}/stop")
        assert r.status_code == 200 and r.json()["status"] == "COMPLETED", r.text
    else:
        assert api.call("DELETE", f"/v1/jobs/{job_id}").status_code == 204
        assert api.call("GET", f"/v1/jobs/{job_id}").status_code == 404
    assert not _left(agent, job_id)


def test_an_agent_killed_right_after_the_exit_event_completes_the_cleanup_when_it_comes_back():
    """The agent dies (SIGKILL) as soon as the exit event is out, while the job's holder is still
    tearing down: the agent that starts next removes what the job held, and keeps its verdict."""
    with running_agent() as own:
        api = own.api()
        job_id = api.submit(script=SLOW_TEARDOWN)
        assert _ended(api, job_id)["status"] == "COMPLETED"
        own.stop(signal.SIGKILL)
        own.start()
        wait_until(lambda: not _left(own, job_id), message=lambda: _left(own, job_id))
        assert own.api().record(job_id)["status"] == "COMPLETED"


def test_the_work_copy_is_complete_at_the_exit_event(api):
    job_id = api.submit(script=SLOW_TEARDOWN)
    _ended(api, job_id)
    listing = api.call("GET", f"/v1/jobs/{job_id}/files").json()
    assert [f["path"] for f in listing["files"] if not f["path"].startswith(".joblet/")] == ["kept.txt"]
    assert api.call("GET", f"/v1/jobs/{job_id}/files/kept.txt").content == b"kept"


def _run_many(api_of: Any, jobs: int, threads: int, command: list[str]) -> list[dict[str, Any]]:
    """`jobs` jobs of `command` from `threads` threads at once (each with its own connection);
    the exit event of each."""
    ends: list[dict[str, Any]] = []
    lock = threading.Lock()
    todo = iter(range(jobs))
    start = threading.Barrier(threads)

    def worker() -> None:
        api = api_of()
        start.wait()
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            end = _ended(api, api.submit(command=command))
            with lock:
                ends.append(end)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return ends


def test_64_jobs_at_once_all_succeed(agent):
    ends = _run_many(agent.api, 64, 64, ["sh", "-c", "echo $JOB_ID"])
    assert len(ends) == 64
    assert [e for e in ends if (e["status"], e["exit_code"]) != ("COMPLETED", 0)] == []


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_nothing_is_left_behind_after_1000_jobs():
    with running_agent() as own:
        assert own.proc is not None
        ends = _run_many(own.api, 20, 4, ["true"])  # first uses open what the agent keeps open
        (launcher,) = _children(own.proc.pid)
        wait_until(lambda: not leftovers(own.root, running=True))
        wait_until(lambda: len(_children(launcher)) == POOL_SIZE)  # not a pool caught mid-refill
        before = (_descriptors(own.proc.pid), _descriptors(launcher), len(_children(launcher)))
        ends = _run_many(own.api, 1000, 8, ["true"])
        assert len(ends) == 1000
        assert [e for e in ends if (e["status"], e["exit_code"]) != ("COMPLETED", 0)] == []
        wait_until(lambda: not leftovers(own.root, running=True),
                   message=lambda: leftovers(own.root, running=True))
        after = lambda: (_descriptors(own.proc.pid), _descriptors(launcher), len(_children(launcher)))  # noqa: E731
        # none more than before (one fewer is a client connection or a spare folder's refill that
        # was open when `before` was taken), and the pool whole again
        settled = lambda now: now[0] <= before[0] and now[1] <= before[1] and now[2] == before[2]  # noqa: E731
        wait_until(lambda: settled(after()),
                   message=lambda: f"descriptors and stages {after()}, before {before}")


def test_a_slow_reader_of_a_large_output_loses_nothing(agent, api):
    """7 MB of numbered lines read a little at a time, slower than the job writes them, so that the
    agent's writes back up: every line arrives once, in order."""
    import json
    import socket
    import time
    from urllib.parse import urlsplit

    lines = 1_000_000
    job_id = api.submit(command=["seq", "1", str(lines)])
    host, port = urlsplit(agent.url).hostname, urlsplit(agent.url).port
    with socket.create_connection((host, port)) as sock:
        sock.sendall(f"GET /v1/jobs/{job_id}/events?follow=true HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {agent.user_token}\r\nConnection: close\r\n\r\n".encode())
        raw = bytearray()
        while chunk := sock.recv(16384):
            raw += chunk
            time.sleep(0.001)
    head, _, body = bytes(raw).partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    events = [json.loads(line) for line in _unchunk(body).splitlines() if line.strip()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "exit" and events[-1]["status"] == "COMPLETED", events[-1]
    out = "".join(e["data"] for e in events if e["type"] == "stdout")
    assert out == "".join(f"{i}\n" for i in range(1, lines + 1))


def _unchunk(body: bytes) -> bytes:
    """An HTTP/1.1 chunked body's payload."""
    out, pos = bytearray(), 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[end + 2:end + 2 + size]
        pos = end + 2 + size + 2

"""The Python holder: which jobs it keeps (a session's; a job that starts with files in its kept
/work, such as a notebook cell; any job where jnb-holder is missing), and hostile requests on its
control socket, each ignored while it keeps its job. jnb-holder meets the same requests in
test_holder_c.py; the two must agree on what they ignore."""

from __future__ import annotations

import os
import socket

import pytest
from agentproc import AgentProcess, Api
from test_holder_c import COUNTER, _connect, _exe, _hello, _holder, _next_hello, _stop

from joblet_agent.sandbox import control, holderplan
from joblet_agent.sandbox.miniloop import SelectorLoop

HOSTILE = [
    b'{"op":"signal","signal":999}',         # pidfd_send_signal refuses it (EINVAL)
    b'{"op":"signal","signal":0}',
    b'{"op":"signal","signal":-9}',
    b'{"op":"signal","signal":1e30}',        # OverflowError converting to a C int
    b'{"op":"signal","signal":99999999999999999999999}',
    b'{"op":"stop","grace":NaN}',            # Python's json reads NaN and Infinity
    b'{"op":"stop","grace":Infinity}',
    b'{"op":"stop","grace":"inf"}',
    b"[" * 100000,                           # RecursionError in json.loads
    b'{"a":' * 50000,
]


@pytest.mark.root
def test_hostile_control_requests_leave_the_python_holder_working(api: Api, agent: AgentProcess):
    aside = holderplan.BINARY + ".jnb-aside"
    os.rename(holderplan.BINARY, aside)
    try:
        job_id = api.submit(script=COUNTER)
        pid, folder = _holder(agent, job_id)
        api.wait_for_output(job_id, "1\n")
    finally:
        os.rename(aside, holderplan.BINARY)
    assert "python" in os.path.basename(_exe(pid)), _exe(pid)
    with _connect(folder) as sock:
        for line in HOSTILE:
            sock.sendall(line + b"\n")
        sock.sendall(b'{"op":"hello"}\n')
        assert _next_hello(sock)  # the same connection still answers, in order
    hello = _hello(folder)
    assert hello["pid"] == pid and hello["state"] == "running" and hello["stop_reason"] is None, hello
    printed = api.wait_for_output(job_id, "\n").splitlines()
    api.wait_for_output(job_id, f"\n{int(printed[-1]) + 3}\n")  # the job goes on: neither signalled nor stopped
    record = _stop(api, job_id)
    assert (record["status"], record["reason"]) == ("STOPPED", "stopped"), record


@pytest.mark.root
def test_a_job_that_starts_with_files_in_its_kept_work_is_held_by_jnb_holder_too(api: Api, agent: AgentProcess):
    """A cell's script and runner are uploads in /work, and what it writes there comes back:
    jnb-holder copies /work out in its own process (holder_copy.c, as the Python holder's
    copy_tree), so a cell is held by it as a command without uploads is."""
    cell = api.submit(script=COUNTER)
    plain = api.submit(command=["python3", "-c", COUNTER])
    try:
        for job_id, held_by in ((cell, "jnb-holder"), (plain, "jnb-holder")):
            pid, _ = _holder(agent, job_id)
            api.wait_for_output(job_id, "1\n")
            assert held_by in os.path.basename(_exe(pid)), (job_id, _exe(pid))
    finally:
        for job_id in (cell, plain):
            _stop(api, job_id)
    result = api.run(script="open('/work/out.txt', 'w').write('kept')\nprint('done')")
    assert result.stdout == "done\n", result.explain()
    assert api.call("GET", f"/v1/jobs/{result.record['id']}/files/out.txt").content == b"kept"


def test_a_peer_that_never_reads_is_cut_off_past_the_unsent_bound():
    """The Python holder's channel, as jnb-holder's: what a greeted peer leaves unread is bounded
    (control.MAX_UNSENT), then the channel closes and its buffer goes; the holder lives on."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    closed: list[control.Channel] = []
    ours.setblocking(False)
    channel = control.Channel(ours, SelectorLoop(), lambda *_: None, closed.append)
    message = {"ev": "seq", "data": "x" * (1 << 20)}
    sent = 0
    try:
        while not channel.closed and sent < 2 * (control.MAX_UNSENT >> 20):
            channel.send(message)
            sent += 1
        assert closed == [channel] and channel.closed, f"still open after {sent} MiB unread"
        assert sent <= (control.MAX_UNSENT >> 20) + 2, sent
        assert len(channel._out) == 0
        channel.send(message)  # a closed channel takes nothing more
        assert len(channel._out) == 0
    finally:
        theirs.close()
        ours.close()

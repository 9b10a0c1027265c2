"""jnb-holder (agent/sandbox/holder.c): a plain job's holder once its init is spawned.

The Python holder execs jnb-holder for a job whose output is text (holderplan.py); sessions keep
the Python holder, and so does every job when jnb-holder is missing. These tests check that the
C holder writes what the Python one wrote (the event lines byte for byte, for any split of any
bytes), that its control socket survives hostile input, that the cap, the timeout and stop work,
that a restarted agent takes its job back, and that nothing is left behind.
"""

from __future__ import annotations

import array
import ctypes
import json
import os
import random
import socket
import struct
import subprocess
import time
import types
from pathlib import Path

import pytest
from agentproc import AgentProcess, Api, leftovers, running_agent
from waiting import wait_until

from joblet_agent.eventfile import encode
from joblet_agent.sandbox import holderplan
from joblet_agent.sandbox.output import TextOutput

COUNTER = "import itertools, time\nfor i in itertools.count():\n    print(i, flush=True)\n    time.sleep(0.05)\n"
PARTS = [b"a", b"\n", b'"', b"\\", b"\x00", b"\x1f", b"\x7f", b"\t\r\b\f", b"\xc3\xa9", b"\xe2\x82\xac",
         b"\xf0\x9f\x98\x80", b"\xef\xbf\xbd", b"\xe2\x80\xa8", b"\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98",
         b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\xaf", b"\xe0\x80", b"\xf0\x80", b"\xf4\x90\x80\x80", b"\xf5"]


def _c_lines(reads: list[tuple[str, bytes]], cap: int) -> bytes:
    """What jnb-holder's relay makes of `reads` (its --relay-test mode): the log's lines from seq 1."""
    data = b"".join(bytes([kind == "stderr"]) + struct.pack("=I", len(r)) + r for kind, r in reads)
    done = subprocess.run([holderplan.BINARY, "--relay-test", str(cap)], input=data, capture_output=True, check=True)
    return done.stdout


def _python_lines(reads: list[tuple[str, bytes]], cap: int) -> bytes:
    out = TextOutput(types.SimpleNamespace(max_output_bytes=cap))  # type: ignore[arg-type]
    events = [e for kind, read in reads for e in out.output(kind, read).events]
    return b"".join(encode(i + 1, e) for i, e in enumerate(events))


def test_the_c_relay_writes_the_lines_python_writes_for_any_split_of_any_bytes():
    """Thousands of outputs (valid, invalid and cut UTF-8, controls, quotes, random bytes), split at
    random reads over both streams, with and without a cap: the same bytes in the log."""
    rng = random.Random(1111)
    for _ in range(4000):
        if rng.random() < 0.25:
            raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        else:
            raw = b"".join(rng.choice(PARTS) for _ in range(rng.randint(0, 40)))
        cap = rng.choice([0, 0, rng.randint(1, 80)])
        cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(0, 10)))) if len(raw) > 1 else []
        reads = [(rng.choice(["stdout", "stderr"]), raw[a:b]) for a, b in zip([0] + cuts, cuts + [len(raw)])]
        reads += [("stdout", b""), ("stderr", b"")]
        assert _c_lines(reads, cap) == _python_lines(reads, cap), (reads, cap)


def test_the_c_relay_matches_python_wherever_a_special_byte_falls_in_a_plain_run():
    """The C relay copies plain ASCII a step (16 or 8 bytes) at a time, escapes a step's newlines in
    place and stops at any other byte that is not plain: each special byte (every control, quote,
    backslash, the edges 0x20 and 0x7f, non-ASCII and cut UTF-8) at each place of a step and of a
    read, between plain runs of every length, mixed with newlines, and seq-like lines in reads cut
    anywhere."""
    rng = random.Random(2222)
    specials = [bytes([c]) for c in range(0x20)] + [b'"', b"\\", b" ", b"\x7f", b"\x80", b"\xff"] + PARTS[8:]
    reads = []
    for special in specials:
        for before in range(0, 18):
            for after in (rng.randint(0, 17), 20):  # 20: a whole step after it
                reads.append((rng.choice(["stdout", "stderr"]), b"p" * before + special + b"q" * after))
    pool = [b"p"] * 6 + [b"\n"] * 3 + specials  # newlines alone in a step, and with another special
    reads += [("stdout", b"".join(rng.choice(pool) for _ in range(rng.randint(0, 40)))) for _ in range(500)]
    text = b"".join(b"%d\n" % i for i in range(1, 20000))
    cuts = sorted(rng.sample(range(1, len(text)), 40))
    reads += [("stdout", text[a:b]) for a, b in zip([0] + cuts, cuts + [len(text)])]
    reads += [("stdout", b""), ("stderr", b"")]
    assert _c_lines(reads, 0) == _python_lines(reads, 0)


def test_the_c_relay_keeps_a_large_read_whole_and_its_cap_note():
    raw = (b"x" * 1000 + b"\n\xe2\x82") * 600
    reads = [("stdout", raw[i:i + (512 << 10)]) for i in range(0, len(raw), 512 << 10)] + [("stdout", b"")]
    assert _c_lines(reads, 0) == _python_lines(reads, 0)
    assert _c_lines(reads, 3 << 20) == _python_lines(reads, 3 << 20)
    assert _c_lines(reads, 1 << 19) == _python_lines(reads, 1 << 19)
    assert b"output beyond 0 MB is not kept" in _c_lines(reads, 1 << 19)


# ---- with an agent ----------------------------------------------------------------------------


def _holder(agent: AgentProcess, job_id: str) -> tuple[int, Path]:
    """The pid of `job_id`'s holder (its holder.json) and its state folder."""
    def found() -> tuple[int, Path] | None:
        for path in (agent.root / "state").glob("*/*/holder.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if data["job_id"] == job_id:
                return data["pid"], path.parent
        return None
    return wait_until(found, timeout=60, message=f"no holder.json for {job_id}")


def _exe(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/exe")


def _wait_for_c_holder(agent: AgentProcess, job_id: str) -> tuple[int, Path]:
    pid, folder = _holder(agent, job_id)
    wait_until(lambda: _exe(pid) == holderplan.BINARY, timeout=30, message=lambda: _exe(pid))
    return pid, folder


def _hello(folder: Path) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(folder / "holder.sock"))
        sock.sendall(b'{"op":"hello"}\n')
        data, fds = b"", []
        while b"\n" not in data:
            msg, anc, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(16))
            assert msg, "the holder closed the connection"
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
            data += msg
        for fd in fds:
            os.close(fd)
        assert len(fds) == 1, "hello comes with the holder's pidfd"
        return json.loads(data.split(b"\n")[0])


@pytest.mark.root
def test_a_plain_job_is_held_by_jnb_holder_and_a_session_by_python(api: Api, agent: AgentProcess):
    job_id = api.submit(command=["python3", "-c", COUNTER])
    try:
        pid, folder = _wait_for_c_holder(agent, job_id)
        assert open(f"/proc/{pid}/comm").read().strip() == "jnb-holder"
        api.wait_for_output(job_id, "0\n")
        hello = _hello(folder)
        assert (hello["ev"], hello["job_id"], hello["pid"], hello["protocol"]) == ("hello", job_id, pid, 1)
        assert hello["state"] == "running" and hello["translator"] == {} and hello["seq"] >= 1
    finally:
        _stop(api, job_id)
    r = api.call("POST", "/v1/sessions", json={})
    assert r.status_code == 201, r.text
    session = r.json()["id"]
    try:
        pid, _ = _holder(agent, session)
        time.sleep(0.5)  # past the moment a plain job's holder would have exec'd
        assert "python" in os.path.basename(_exe(pid)), _exe(pid)
    finally:
        api.call("DELETE", f"/v1/sessions/{session}")


def _hello_or_none(folder: Path) -> dict | None:
    try:
        return _hello(folder)
    except (ConnectionResetError, AssertionError):
        return None


def _stop(api: Api, job_id: str) -> dict:
    """Stop the job, follow its log to its end, wait for its clean-up; its record."""
    assert api.call("POST", f"/v1/jobs/{job_id}/stop").status_code == 200
    api.events(job_id)
    api.settle(job_id)
    return api.record(job_id)


def _connect(folder: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(folder / "holder.sock"))
    return sock


def _next_hello(sock: socket.socket) -> bytes:
    """The hello answer among what a greeted peer is sent: once greeted, a peer also gets a `seq`
    line whenever the log grows, which may come before the answer."""
    data = b""
    while True:
        for line in data.split(b"\n")[:-1]:
            if b'"ev":"hello"' in line:
                return line
        chunk = sock.recv(65536)
        assert chunk, f"the holder closed the connection after {data[-200:]!r}"
        data += chunk


def _closed_by_peer(sock: socket.socket, timeout: float = 10) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    return True


@pytest.mark.root
def test_hostile_control_input_leaves_the_c_holder_working(api: Api, agent: AgentProcess):
    """Garbage, malformed and deeply nested JSON, bad values, invalid UTF-8, a line past the 64 MiB
    bound, descriptors passed in, a non-root peer and more than 16 connections: the holder ignores
    or cuts each, closes every descriptor it was sent, and still answers and stops its job."""
    job_id = api.submit(command=["python3", "-c", COUNTER])
    try:
        pid, folder = _wait_for_c_holder(agent, job_id)
        with _connect(folder) as sock:
            for line in [b"garbage", b"{", b"[1,2]", b'"op"', b"{}", b'{"op":1}', b'{"op":"nope"}', b"\xff\xfe{}",
                         b'{"op":"signal","signal":999}', b'{"op":"signal","signal":"x"}', b'{"op":"signal"}',
                         b'{"op":"stop","grace":null}', b'{"op":"stop","grace":"soon"}', b'{"op":"input","data":"x"}',
                         b'{"op":"go"}', b'{"op":"abort"}', b'{"op":"hello",}', b'{"op":"hello"} x',
                         b'{"op":"\xed\xa0\x80"}', b'{"a":"\x01"}', b"[" * 100000, b"{\"a\":" * 50000,
                         b'{"op":1e999999}', b'{"op":-}', b'{"op":01}', b'{"op":"\\ud800"}', b"\x00" * 1000]:
                sock.sendall(line + b"\n")
            # descriptors passed along: the holder closes them (the pipe's read end sees its end)
            r, w = os.pipe()
            socket.send_fds(sock, [b'{"op":"nothing"}\n'], [w, w, w])
            os.close(w)
            os.set_blocking(r, False)
            wait_until(lambda: _pipe_ended(r), timeout=10, message="a passed descriptor stayed open")
            os.close(r)
        # a line past the bound: cut off
        with _connect(folder) as sock:
            chunk = b"x" * (1 << 20)
            try:
                for _ in range(65):
                    sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert _closed_by_peer(sock)
        # a peer that is not root: cut off at once
        assert _answer_to_a_peer_of_uid(folder, 65534) == b"closed"
        assert _answer_to_a_peer_of_uid(folder, 0) == b"answered"
        # more than 16 connections: the ones past the bound are closed, the others answer
        held: list[socket.socket] = []
        try:
            for _ in range(15):  # the agent holds the first channel; each answers, so it was taken
                held.append(_connect(folder))
                held[-1].sendall(b'{"op":"hello"}\n')
                assert b'"ev":"hello"' in held[-1].recv(65536)
            for _ in range(4):
                with _connect(folder) as extra:
                    assert _closed_by_peer(extra, timeout=10)
            held[0].sendall(b'{"op":"hello"}\n')
            assert _next_hello(held[0])
        finally:
            for sock in held:
                sock.close()
        assert _exe(pid) == holderplan.BINARY
        hello = wait_until(lambda: _hello_or_none(folder), timeout=20)  # once it has seen the 15 go
        assert hello["pid"] == pid and hello["stop_reason"] is None
    finally:
        record = _stop(api, job_id)
    assert (record["status"], record["reason"]) == ("STOPPED", "stopped"), record
    events = api.events(job_id, follow=False)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


MAX_UNSENT = 64 << 20  # holder.h: a greeted peer's unsent bytes before it is cut off


def test_the_c_holder_cuts_off_a_greeted_peer_past_64_mib_unsent():
    """A peer that said hello and never reads gets a seq line for every turn of the loop: past the
    bound the holder closes its channel instead of holding more (a job would need hours of output
    to get there, so the binary's own test entry tells the lines, as the loop does)."""
    got = subprocess.run([holderplan.BINARY, "--unsent-test"], capture_output=True, timeout=120, check=True)
    verdict, most = got.stdout.split()
    assert verdict == b"closed", got.stdout
    assert MAX_UNSENT < int(most) <= MAX_UNSENT + 64


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.root
def test_a_root_peer_that_never_reads_leaves_the_c_holder_working_and_small(api: Api, agent: AgentProcess):
    """Attack: a root peer says hello and never reads while the job writes many small lines; the
    holder keeps logging and answering, and its resident memory (VmHWM, the peak) stays small."""
    script = ("import sys\nfor i in range(100000):\n    sys.stdout.write('%d\\n' % i)\n    sys.stdout.flush()\n"
              "print('done', flush=True)\nimport time\ntime.sleep(120)\n")
    job_id = api.submit(command=["python3", "-c", script])
    try:
        pid, folder = _wait_for_c_holder(agent, job_id)
        with _connect(folder) as silent:
            silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            silent.sendall(b'{"op":"hello"}\n')
            api.wait_for_output(job_id, "done", timeout=120)
            assert _exe(pid) == holderplan.BINARY
            hello = _hello(folder)
            assert hello["pid"] == pid and hello["seq"] >= 2
            assert _status_kb(pid, "VmHWM") < (MAX_UNSENT >> 10) + 32 * 1024
    finally:
        record = _stop(api, job_id)
    assert (record["status"], record["reason"]) == ("STOPPED", "stopped"), record
    events = api.events(job_id, follow=False)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    text = "".join(e.get("data", "") for e in events if e["type"] == "stdout")
    assert text == "".join("%d\n" % i for i in range(100000)) + "done\n"


def _pipe_ended(fd: int) -> bool:
    try:
        return os.read(fd, 1) == b""
    except BlockingIOError:
        return False


def _answer_to_a_peer_of_uid(folder: Path, uid: int) -> bytes:
    """Whether the holder answers a hello from a process whose effective uid (what SO_PEERCRED
    tells) is `uid`; its filesystem uid stays root's, so it reaches the root-only folder."""
    parent, child_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            parent.close()
            os.seteuid(uid)
            ctypes.CDLL(None, use_errno=True).setfsuid(0)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(folder / "holder.sock"))
                try:
                    sock.sendall(b'{"op":"hello"}\n')
                    answer = sock.recv(65536)
                except (BrokenPipeError, ConnectionResetError):
                    answer = b""  # closed before the hello went out
            child_end.sendall(b"answered" if answer else b"closed")
        except BaseException as exc:  # noqa: BLE001 - told to the test
            child_end.sendall(repr(exc).encode()[:200])
        finally:
            os._exit(0)
    child_end.close()
    parent.settimeout(30)
    verdict = parent.recv(256)
    os.waitpid(pid, 0)
    parent.close()
    return verdict


@pytest.mark.root
def test_the_c_holder_cuts_output_at_its_cap_and_enforces_timeout_and_stop(api: Api, agent: AgentProcess):
    n = 400_000
    with running_agent("max_output_mb: 1\n") as own:
        capped = own.api().run(command=["seq", "1", str(n)])
    want = b"".join(b"%d\n" % i for i in range(1, n + 1))
    assert capped.stdout.encode() == want[:1 << 20]
    assert capped.stderr == "[joblet] output beyond 1 MB is not kept\n"
    result = api.run(command=["sleep", "60"], limits={"timeout_s": 1})
    assert (result.record["status"], result.record["reason"]) == ("FAILED", "timeout"), result.explain()
    script = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('ready', flush=True)\ntime.sleep(120)\n")
    job_id = api.submit(command=["python3", "-c", script])
    _wait_for_c_holder(agent, job_id)
    api.wait_for_output(job_id, "ready")
    started = time.monotonic()
    record = _stop(api, job_id)
    assert (record["status"], record["reason"]) == ("STOPPED", "stopped"), record
    assert time.monotonic() - started < 60  # SIGTERM ignored: the grace's SIGKILL ended it


@pytest.mark.root
def test_the_c_holder_copies_work_out_and_records_its_outcome(api: Api, agent: AgentProcess):
    result = api.run(command=["sh", "-c", "mkdir -p out && printf 'result' > out/r.txt && echo é"])
    assert result.stdout == "é\n"
    r = api.call("GET", f"/v1/jobs/{result.id}/files/out/r.txt")
    assert (r.status_code, r.content) == (200, b"result")
    outcome = json.loads((agent.root / "state" / "jobs" / result.id / "outcome.json").read_text())
    assert (outcome["end"], outcome["exit_code"], outcome["kept_files"], outcome["kept_bytes"]) == ("exit", 0, 2, 6)
    assert isinstance(outcome["cpu_s"], float) and outcome["memory_peak_bytes"] > 0
    assert list(outcome["marks"])[:5] == ["came", "taken", "root", "root_built", "forked"]
    assert {"running", "init_ended", "drained", "usage", "work_copied", "logged"} <= set(outcome["marks"])
    assert not (agent.root / "state" / "jobs" / result.id / "holder.json").exists()


@pytest.mark.root
def test_an_agent_restart_mid_job_takes_the_c_holder_back():
    with running_agent(stop_jobs=False) as agent:
        api = agent.api()
        job_id = api.submit(command=["python3", "-c", COUNTER])
        pid, _ = _wait_for_c_holder(agent, job_id)
        api.wait_for_output(job_id, "3\n")
        agent.stop(9)
        time.sleep(1)
        agent.start()
        api = agent.api()
        api.wait_for_output(job_id, "60\n", timeout=60)
        assert _exe(pid) == holderplan.BINARY
        assert _stop(api, job_id)["reason"] == "stopped"
        events = api.events(job_id, follow=False)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        text = "".join(e["data"] for e in events if e["type"] == "stdout")
        assert [int(x) for x in text.splitlines()] == list(range(len(text.splitlines())))
    assert not leftovers(agent.root)


@pytest.mark.root
def test_without_jnb_holder_the_python_holder_keeps_the_job(api: Api, agent: AgentProcess):
    """The binary missing (a host where it was not built): the job runs as before, held in Python."""
    aside = holderplan.BINARY + ".jnb-aside"
    os.rename(holderplan.BINARY, aside)
    try:
        job_id = api.submit(command=["python3", "-c", COUNTER])
        pid, _ = _holder(agent, job_id)
        api.wait_for_output(job_id, "2\n")
        assert "python" in os.path.basename(_exe(pid)), _exe(pid)
        assert _stop(api, job_id)["reason"] == "stopped"
    finally:
        os.rename(aside, holderplan.BINARY)
    result = api.run(command=["sh", "-c", "printf 'x\\377y'"])
    assert result.stdout == "x\ufffdy"


TERM_COUNTER = """
import signal, sys, time
got = []
signal.signal(signal.SIGTERM, lambda *_: got.append(1))
print("ready", flush=True)
while not got:
    time.sleep(0.01)
time.sleep(0.5)
print("terms", len(got), flush=True)
"""


@pytest.mark.root
def test_a_stop_reaches_the_job_once(api: Api):
    """The init forwards the holder's SIGTERM to the job's process group, and to its main process
    alone only when it has left the group: signalled twice, a job that exits from its handler
    could die of the second (seen as `signal 15` for a job that exited 0)."""
    for _ in range(5):
        job_id = api.submit(command=["python3", "-c", TERM_COUNTER])
        api.wait_for_output(job_id, "ready")
        record = _stop(api, job_id)
        assert "terms 1\n" in "".join(e["data"] for e in api.events(job_id, follow=False) if e["type"] == "stdout")
        assert (record["exit_code"], record["signal"]) == (0, None), record

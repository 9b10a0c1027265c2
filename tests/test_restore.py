"""Live restore (issue 14): jobs outlive their agent, and a restarted agent takes them back.

Every test here kills or stops a real agent while real jobs run, starts it again on the same root,
and checks what the README promises: output recorded while no agent ran is in the log exactly once
(gap-free seq), connections stay up, stop and timeouts still work, jobs that ended meanwhile get
their true verdict, a process that is not a job's holder is never trusted, and nothing is left
behind (running_agent checks that, and cleans up after a failed test too).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agentproc import TEST_PREFIX, AGENT, AgentProcess, Api, leftovers, running_agent
from netlab import joined_namespace
from waiting import wait_until

pytestmark = pytest.mark.root

COUNTER = "import itertools, time\nfor i in itertools.count():\n    print(i, flush=True)\n    time.sleep(0.05)\n"
PORT = 9077

# A bridge job that holds one TCP connection and echoes what comes over it.
ECHO_JOB = r'''
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.settimeout(None)
print("connected", flush=True)
f = s.makefile("rw")
for line in f:
    print("got", line.strip(), flush=True)
    f.write("echo " + line)
    f.flush()
'''

# The far end, in a network namespace of the test's own: lines from its stdin go over the
# connection, the job's answers come back on its stdout.
ECHO_SERVER = r'''
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
print("listening", flush=True)
conn, _ = srv.accept()
print("accepted", flush=True)
f = conn.makefile("rw")
for line in sys.stdin:
    f.write(line)
    f.flush()
    print(f.readline().strip(), flush=True)
'''


# ---- a far end for a bridge job ----------------------------------------------------------------


@dataclass
class FarEnd:
    address: str
    server: subprocess.Popen[str]

    def say(self, text: str, timeout: float = 20) -> str:
        """Send a line over the job's connection; the job's answer."""
        assert self.server.stdin is not None and self.server.stdout is not None
        self.server.stdin.write(text + "\n")
        self.server.stdin.flush()
        return _readline(self.server, timeout)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    box: list[str] = []
    assert proc.stdout is not None
    out = proc.stdout
    reader = threading.Thread(target=lambda: box.append(out.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert box, f"no answer within {timeout} s"
    return box[0].strip()


@pytest.fixture
def far_end() -> Iterator[FarEnd]:
    """A network namespace with an echo server, joined to the host by a veth (a /30 of
    198.18.232.0/22, the benchmarking range; chosen at random so runs do not collide)."""
    tag = secrets.token_hex(3)
    name, host_veth = f"{TEST_PREFIX}far-{tag}", f"{TEST_PREFIX}f{tag[:5]}"
    base = (198 << 24) | (18 << 16) | (232 << 8) | (secrets.randbelow(256) * 4)
    host_ip, far_ip = (socket.inet_ntoa((base + n).to_bytes(4, "big")) for n in (1, 2))
    server = None
    with joined_namespace(name, host_veth, host_ip, far_ip, 30) as ns:
        ns.route("add", dst="0.0.0.0/0", gateway=host_ip)
        try:
            server = subprocess.Popen(["nsenter", f"--net=/run/netns/{name}", sys.executable, "-c", ECHO_SERVER,
                                       far_ip, str(PORT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      start_new_session=True)
            assert _readline(server, 30) == "listening"
            yield FarEnd(far_ip, server)
        finally:
            if server is not None:
                server.kill()
                server.wait()


# ---- helpers -----------------------------------------------------------------------------------


def job_dir(agent: AgentProcess, job_id: str) -> Path:
    return agent.root / "state" / "jobs" / job_id


def counter_values(events: list[dict]) -> list[int]:
    text = "".join(e["data"] for e in events if e["type"] == "stdout")
    return [int(line) for line in text.splitlines()]


def assert_gap_free(events: list[dict]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), [e["seq"] for e in events]


def kill_agent(agent: AgentProcess) -> None:
    agent.stop(signal.SIGKILL)


def _answers(api: Api) -> bool:
    import requests

    try:
        return api.call("GET", "/v1/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def run_cell(api: Api, sid: str, code: str) -> list[dict]:
    """One session cell's events, through its cell_end."""
    r = api.call("POST", f"/v1/sessions/{sid}/cells", json={"code": code})
    assert r.status_code == 201, r.text
    cell = r.json()["cell"]
    out = []
    with api.call("GET", f"/v1/sessions/{sid}/events", params={"follow": "true"}, stream=True) as stream:
        for line in stream.iter_lines():
            event = json.loads(line)
            if event.get("cell") == cell:
                out.append(event)
            if event.get("cell") == cell and event["type"] == "cell_end" or event["type"] == "exit":
                break
    return out


def cell_stdout(events: list[dict]) -> str:
    return "".join(e["data"] for e in events if e["type"] == "stdout")


def _cleaned_up(agent: AgentProcess, context: object = "") -> None:
    """The job's cleanup (its cgroup, its folder's mounts) follows its exit event, off the path the
    user waits on: it must complete, not have completed when the record first says the job ended."""
    wait_until(lambda: not leftovers(agent.root, running=True), 30,
               message=lambda: f"left behind: {leftovers(agent.root, running=True)} {context}")


# ---- the tests ---------------------------------------------------------------------------------


def test_jobs_a_connection_and_a_session_survive_a_killed_agent(far_end: FarEnd) -> None:
    with running_agent(stop_jobs=False) as agent:
        api = agent.api()
        sid = api.call("POST", "/v1/sessions", json={}).json()["id"]
        assert run_cell(api, sid, "x = 42")[-1]["status"] == "ok"
        counter = api.submit(command=["python3", "-c", COUNTER])
        echo = api.submit(command=["python3", "-c", ECHO_JOB, far_end.address, str(PORT)], network="bridge")
        api.wait_for_output(echo, "connected")
        assert _readline(far_end.server, 20) == "accepted"
        assert far_end.say("before") == "echo before"
        api.wait_for_output(counter, "\n10\n")

        kill_agent(agent)
        time.sleep(1.5)  # ~30 more counter values, recorded while no agent runs
        assert far_end.say("while-away") == "echo while-away"
        agent.start()

        api = agent.api()
        assert cell_stdout(run_cell(api, sid, "print(x)")) == "42\n"
        assert far_end.say("after") == "echo after"
        api.wait_for_output(echo, "got after")
        assert api.record(counter)["status"] == "RUNNING"
        seen = len(counter_values(api.events(counter, follow=False)))
        wait_until(lambda: len(counter_values(api.events(counter, follow=False))) > seen + 5, 20,
                   message="the counter's output does not come through the restarted agent")
        for job_id in (counter, echo):
            api.call("POST", f"/v1/jobs/{job_id}/stop")
            assert api.wait_for_status(job_id)["status"] == "STOPPED"
        events = api.events(counter)
        assert_gap_free(events)
        values = counter_values(events)
        assert values == list(range(len(values))) and len(values) > 40, values
        assert [e["status"] for e in events if e["type"] == "status"] == ["RUNNING"]
        echo_out = "".join(e["data"] for e in api.events(echo) if e["type"] == "stdout")
        assert echo_out == "connected\ngot before\ngot while-away\ngot after\n"
        assert api.call("DELETE", f"/v1/sessions/{sid}").status_code == 204
        assert api.call("GET", f"/v1/sessions/{sid}").json()["reason"] == "deleted"


def test_jobs_that_end_while_the_agent_is_away_get_their_true_verdict() -> None:
    with running_agent(stop_jobs=False) as agent:
        api = agent.api()
        exits = api.submit(command=["sh", "-c", "echo bye; sleep 1; exit 3"])
        times_out = api.submit(command=["sleep", "60"], limits={"timeout_s": 1})
        completes = api.submit(script="import time\ntime.sleep(1)\nx = 6 * 7\n", outputs=["x"])
        for job_id in (exits, times_out, completes):
            api.wait_for_status(job_id, "RUNNING")
        kill_agent(agent)
        wait_until(lambda: all((job_dir(agent, j) / "outcome.json").exists() for j in (exits, times_out, completes)),
                   30, message="the holders did not record how their jobs ended")
        agent.start()
        api = agent.api()
        record = api.record(exits)
        assert (record["status"], record["reason"], record["exit_code"]) == ("FAILED", "exit", 3), record
        assert record["usage"]["cpu_s"] is not None
        assert (api.record(times_out)["status"], api.record(times_out)["reason"]) == ("FAILED", "timeout")
        events = api.events(completes)
        assert_gap_free(events)
        assert api.record(completes)["status"] == "COMPLETED"
        assert [e for e in events if e["type"] == "outputs"][0]["values"] == {"x": 42}
        assert "".join(e["data"] for e in api.events(exits) if e["type"] == "stdout") == "bye\n"


def test_a_record_saved_before_its_job_ran_is_running_again_with_its_holders_start_time() -> None:
    """The agent saves a RUNNING record a moment later (with what follows), not when the job starts:
    an agent killed in between leaves the record as it was at launch. Made so on disk here, for a
    job still running and for one that ends while no agent runs: the next agent shows both started
    when their holders said, the first RUNNING again."""
    with running_agent(stop_jobs=False) as agent:
        api = agent.api()
        runs, ends = api.submit(command=["sleep", "300"]), api.submit(command=["sh", "-c", "sleep 5; exit 4"])
        started = {job_id: api.wait_for_status(job_id, "RUNNING")["started_at"] for job_id in (runs, ends)}
        kill_agent(agent)
        for job_id in (runs, ends):
            path = job_dir(agent, job_id) / "record.json"
            at_launch = dict(json.loads(path.read_text()), status="PENDING", started_at=None)
            path.write_text(json.dumps(at_launch))
        wait_until(lambda: (job_dir(agent, ends) / "outcome.json").exists(), 30, message="the job did not end")
        agent.start()
        api = agent.api()
        record = api.record(runs)
        assert (record["status"], record["started_at"]) == ("RUNNING", started[runs]), record
        record = api.record(ends)
        assert (record["status"], record["exit_code"], record["started_at"]) == ("FAILED", 4, started[ends]), record
        api.call("POST", f"/v1/jobs/{runs}/stop")
        assert api.wait_for_status(runs)["status"] == "STOPPED"


def test_sigterm_leaves_jobs_running_and_stop_jobs_stops_them() -> None:
    with running_agent(stop_jobs=False) as agent:
        api = agent.api()
        job_id = api.submit(command=["sleep", "300"])
        api.wait_for_status(job_id, "RUNNING")
        agent.stop()  # SIGTERM, without --stop-jobs
        assert leftovers(agent.root, running=True), "the job did not outlive a graceful stop"
        agent.stop_jobs = True
        agent.start()
        assert agent.api().record(job_id)["status"] == "RUNNING"
        agent.stop()  # SIGTERM with --stop-jobs
        assert not leftovers(agent.root)
        agent.start()
        assert agent.api().record(job_id)["status"] == "STOPPED"


def test_the_per_user_bounds_count_the_jobs_a_restarted_agent_took_back() -> None:
    """quotas.live_jobs_per_user holds across a restart: the adopted jobs still count, and what
    each may keep of /work is what its first agent gave it."""
    with running_agent("quotas: {live_jobs_per_user: 2}\n", stop_jobs=False) as agent:
        api = agent.api()
        jobs = [api.submit(command=["sleep", "300"]) for _ in range(2)]
        for job_id in jobs:
            api.wait_for_status(job_id, "RUNNING")
        kill_agent(agent)
        agent.start()
        api = agent.api()
        r = api.call("POST", "/v1/jobs", json={"command": ["true"]})
        assert r.status_code == 429 and "live_jobs_per_user" in r.text, r.text
        api.call("POST", f"/v1/jobs/{jobs[0]}/stop")
        assert api.wait_for_status(jobs[0])["status"] == "STOPPED"
        assert api.run(command=["true"]).record["status"] == "COMPLETED"
        api.call("POST", f"/v1/jobs/{jobs[1]}/stop")
        assert api.wait_for_status(jobs[1])["status"] == "STOPPED"


def _sleeping_job_of_a_killed_agent(agent: AgentProcess) -> tuple[str, Path]:
    """A long job, running; then its agent killed. Its id and state folder."""
    api = agent.api()
    job_id = api.submit(command=["sleep", "300"])
    api.wait_for_status(job_id, "RUNNING")
    kill_agent(agent)
    return job_id, job_dir(agent, job_id)


def test_a_process_that_is_not_the_holder_is_not_trusted() -> None:
    """Even with the job's token (root can read it), a process outside the job's cgroup that
    answers on the job's socket is refused: the job is ended (its real holder killed) as lost."""
    with running_agent(stop_jobs=False) as agent:
        job_id, folder = _sleeping_job_of_a_killed_agent(agent)
        token = json.loads((folder / "record.json").read_text())["launch"]["token"]
        impostor = _Impostor(folder, job_id, token)
        try:
            agent.start()
        finally:
            impostor.close()
        assert impostor.asked, "the agent never asked the impostor"
        record = agent.api().record(job_id)
        assert (record["status"], record["reason"]) == ("FAILED", "lost"), record
        assert "not in the job's cgroup" in record["message"], record
        _cleaned_up(agent)


def test_a_holder_that_does_not_listen_yet_is_waited_for_and_taken_back() -> None:
    """A holder says who it is (holder.json) and listens once its job's init is forked, a moment
    after it locked the log. An agent restarting in between finds a held log with neither: it waits
    for the socket and takes the job back. Made so here: the socket moved away (a renamed socket
    still answers) and holder.json gone while the agent starts, the socket back three seconds later
    (restore waits five)."""
    with running_agent(stop_jobs=False) as agent:
        job_id, folder = _sleeping_job_of_a_killed_agent(agent)
        (folder / "holder.json").unlink()
        (folder / "holder.sock").rename(folder / "holder.sock.away")
        back = threading.Timer(3.0, (folder / "holder.sock.away").rename, args=(folder / "holder.sock",))
        back.start()
        try:
            agent.start()
        finally:
            back.join()
        api = agent.api()
        assert api.record(job_id)["status"] == "RUNNING"
        api.call("POST", f"/v1/jobs/{job_id}/stop")
        record = api.wait_for_status(job_id)
        assert (record["status"], record["reason"]) == ("STOPPED", "stopped"), record
        _cleaned_up(agent)


def _note_to_launch_json(folder: Path) -> None:
    """A job's folder as an agent of format 2 left it: its launch note in launch.json, not in its
    record file."""
    record = json.loads((folder / "record.json").read_text())
    (folder / "launch.json").write_text(json.dumps(record.pop("launch")))
    (folder / "record.json").write_text(json.dumps(record))


def test_a_job_an_agent_of_format_2_launched_is_taken_back_from_its_launch_json() -> None:
    """Format 3 keeps a job's launch note in its record file (one file less per job); a job whose
    folder has it as launch.json (an agent of format 2 launched it) is still adopted, stops and
    is cleaned up as any other."""
    with running_agent(stop_jobs=False) as agent:
        job_id, folder = _sleeping_job_of_a_killed_agent(agent)
        assert not (folder / "launch.json").exists()
        token = json.loads((folder / "record.json").read_text())["launch"]["token"]
        _note_to_launch_json(folder)
        assert "launch" not in json.loads((folder / "record.json").read_text())
        agent.start()
        api = agent.api()
        assert api.record(job_id)["status"] == "RUNNING"
        assert json.loads((Path(agent.root) / "state" / "format.json").read_text())["format"] == 3
        api.call("POST", f"/v1/jobs/{job_id}/stop")
        record = api.wait_for_status(job_id)
        assert (record["status"], record["reason"]) == ("STOPPED", "stopped"), record
        assert json.loads((folder / "launch.json").read_text())["token"] == token
        assert "launch" not in json.loads((folder / "record.json").read_text())  # an ended job's record has none
        _cleaned_up(agent)


@pytest.mark.parametrize("said_by", ["holder.json", "record.json", "launch.json"])
def test_a_job_whose_holder_ran_under_another_boot_is_reported_lost_to_a_host_restart(said_by: str) -> None:
    """What a host restart leaves: a job's folder whose holder recorded another boot id, and no
    process. The job ends lost, saying the host restarted (the README's promise), not that its
    holder died. Its launch note says the boot too, for a restart before its holder wrote
    holder.json (which it does once the job's init is forked): in its record file, or in
    launch.json where an agent of format 2 launched it."""
    with running_agent(stop_jobs=False) as agent:
        job_id, folder = _sleeping_job_of_a_killed_agent(agent)
        holder = json.loads((folder / "holder.json").read_text())
        os.kill(holder["pid"], signal.SIGKILL)  # what a host restart does to every process
        wait_until(lambda: not Path(f"/proc/{holder['pid']}").exists(), 30, message="the holder did not die")
        other_boot = "00000000-0000-4000-8000-" + secrets.token_hex(6)
        assert not (folder / "launch.json").exists()  # format 3: the note is in the record file
        if said_by == "launch.json":
            _note_to_launch_json(folder)
        said = json.loads((folder / said_by).read_text())
        note = said.get("launch", said) if said_by == "record.json" else said
        assert note["boot_id"] == holder["boot_id"], said
        if said_by == "record.json":
            said["launch"] = dict(note, boot_id=other_boot)
        else:
            said = dict(said, boot_id=other_boot)
        (folder / said_by).write_text(json.dumps(said))
        if said_by != "holder.json":
            (folder / "holder.json").unlink()
        agent.start()
        record = agent.api().record(job_id)
        assert (record["status"], record["reason"]) == ("FAILED", "lost"), record
        assert "the host restarted" in record["message"], record
        events = agent.api().events(job_id)
        assert_gap_free(events)
        assert events[-1]["type"] == "exit", events
        _cleaned_up(agent)


class _Impostor:
    """Answers hello on a job's socket with the right token and a pidfd of itself."""

    def __init__(self, folder: Path, job_id: str, token: str) -> None:
        (folder / "holder.sock").unlink()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(folder / "holder.sock"))
        self.sock.listen(4)
        self.job_id, self.token, self.asked = job_id, token, False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import array

        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.recv(4096)
        self.asked = True
        hello = {"ev": "hello", "protocol": 1, "job_id": self.job_id, "token": self.token, "pid": os.getpid(),
                 "uid": 1000, "state": "running", "seq": 1, "started_at": None, "stop_reason": None}
        pidfd = os.pidfd_open(os.getpid())
        conn.sendmsg([json.dumps(hello).encode() + b"\n"],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pidfd]))])
        os.close(pidfd)
        conn.close()

    def close(self) -> None:
        self.sock.close()


def test_state_of_a_newer_format_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "state").mkdir(parents=True)
    (root / "state" / "format.json").write_text(json.dumps({"format": 99, "agent": "9.9.9"}))
    out = subprocess.run(AGENT + ["serve", "--root", str(root), "--listen", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert "written by joblet-agent 9.9.9 (on-disk format 99)" in out.stderr, out.stderr
    assert json.loads((root / "state" / "format.json").read_text())["format"] == 99


def test_a_followed_job_rides_through_a_restart(capsys: pytest.CaptureFixture[str]) -> None:
    """The notebook's follower of a job (what a `%%joblet` cell runs) reconnects after the agent
    is back: a short note that it was away, then the rest of the output, no line twice."""
    from joblet_nb.core.client import JobletClient
    from joblet_nb.core.request import JobRequest
    from joblet_nb.core.stream import JobFollower

    with running_agent(stop_jobs=False) as agent:
        client = JobletClient(agent.url, agent.user_token)
        job = client.run_job(JobRequest(script="import time\nfor i in range(120):\n    print(i, flush=True)\n"
                                               "    time.sleep(0.05)\n"))

        def restart() -> None:
            agent.api().wait_for_output(job.id, "\n20\n")
            kill_agent(agent)
            time.sleep(1.0)
            agent.start()

        restarter = threading.Thread(target=restart)
        restarter.start()
        result = JobFollower(client, job.id).follow()
        restarter.join()
        out, err = capsys.readouterr()
        assert result.record.status == "COMPLETED", result.record
        assert out.split() == [str(i) for i in range(120)]
        assert err.count("[joblet] the agent was away for") == 1, err


def test_crashes_at_random_points_during_many_short_jobs() -> None:
    """200 short jobs, submitted from four threads while the agent is killed (SIGKILL) at random
    moments and started again: every job that has a record ends with a verdict, none runs twice,
    every log is gap-free with one exit, and nothing is left behind."""
    import random

    import requests

    seed = int(os.environ.get("JNB_CRASH_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    with running_agent(stop_jobs=False) as agent:
        created: list[str] = []

        def submit(first: int) -> None:
            api = agent.api()
            for i in range(first, 200, 4):
                body = {"command": ["sh", "-c", f"echo job {i}; sleep 0.{rng.randrange(4)}"]}
                try:
                    r = api.call("POST", "/v1/jobs", json=body, timeout=30)
                except requests.RequestException:  # this job may or may not exist; never sent again
                    wait_until(lambda: _answers(api), 60, message="the agent did not come back")
                    continue
                if r.status_code == 201:
                    created.append(r.json()["id"])

        submitters = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
        for t in submitters:
            t.start()
        crashes = 0
        while any(t.is_alive() for t in submitters) or crashes < 3:
            time.sleep(rng.uniform(0.2, 2.5))
            kill_agent(agent)
            crashes += 1
            time.sleep(rng.uniform(0.0, 1.0))
            agent.start()
        for t in submitters:
            t.join()

        api = agent.api(agent.admin_token)
        wait_until(lambda: all(j["status"] in ("COMPLETED", "FAILED", "STOPPED")
                               for j in api.call("GET", "/v1/jobs").json()), 120,
                   message=f"jobs without a verdict (seed {seed})")
        records = api.call("GET", "/v1/jobs").json()
        assert set(created) <= {r["id"] for r in records}, f"seed {seed}"
        printed: dict[str, int] = {}
        for record in records:
            events = api.events(record["id"], follow=False)
            assert_gap_free(events)
            assert [e["type"] for e in events].count("exit") == 1 and events[-1]["type"] == "exit", (seed, events)
            assert [e["type"] for e in events].count("status") <= 1, (seed, events)
            for line in "".join(e["data"] for e in events if e["type"] == "stdout").splitlines():
                printed[line] = printed.get(line, 0) + 1
            if record["status"] == "COMPLETED":
                assert "job " in "".join(e["data"] for e in events if e["type"] == "stdout"), (seed, events)
            else:
                assert record["reason"] in ("lost", "setup"), (seed, record)
        assert all(n == 1 for n in printed.values()), (seed, printed)
        assert crashes >= 3 and len(records) >= 200 - 4 * crashes, (seed, crashes, len(records))
        _cleaned_up(agent, seed)


def test_a_session_cell_rides_through_a_restart() -> None:
    """The notebook's session client (what `%%joblet run --session` follows) gets the rest of a
    running cell's output once the agent is back, after a short note, no line twice; the session's
    variables are still there for the next cell."""
    from joblet_nb.core.client import JobletClient
    from joblet_nb.core.session import Session

    with running_agent(stop_jobs=False) as agent:
        session = Session.start(JobletClient(agent.url, agent.user_token))
        first = session.submit("x = 42")
        while session.next_event(first)["type"] != "cell_end":
            pass
        cell = session.submit("import time\nfor i in range(100):\n    print(i, flush=True)\n    time.sleep(0.05)\n")
        out, notes, restarted = "", "", False
        while True:
            event = session.next_event(cell)
            if event["type"] == "stdout":
                out += event["data"]
                if "\n20\n" in out and not restarted:
                    kill_agent(agent)
                    agent.start()
                    restarted = True
            elif event["type"] == "stderr":
                notes += event["data"]
            elif event["type"] in ("cell_end", "exit"):
                break
        assert event["type"] == "cell_end" and event["status"] == "ok", event
        assert out.split() == [str(i) for i in range(100)]
        assert notes.count("[joblet] the agent was away for") == 1, notes
        check = session.submit("print(x)")
        printed = ""
        while (event := session.next_event(check))["type"] != "cell_end":
            printed += event.get("data", "") if event["type"] == "stdout" else ""
        assert printed == "42\n"
        session.stop()


def test_cell_numbers_go_on_after_a_restart_that_the_record_on_disk_missed() -> None:
    """A cell's number is saved off the cell's path (within a second); an agent killed before that
    takes the numbers its sessions' holders gave out, and the next cell's number follows them."""
    with running_agent(stop_jobs=False) as agent:
        api = agent.api()
        sid = api.call("POST", "/v1/sessions", json={}).json()["id"]
        assert run_cell(api, sid, "x = 1")[-1]["status"] == "ok"
        assert run_cell(api, sid, "x += 1")[-1]["status"] == "ok"
        kill_agent(agent)  # at once: the record on disk still says 0 cells
        saved = json.loads((agent.root / "state" / "sessions" / sid / "record.json").read_text())
        agent.start()
        api = agent.api()
        assert api.call("GET", f"/v1/sessions/{sid}").json()["cells"] == 2
        events = run_cell(api, sid, "print(x)")
        assert events[0]["cell"] == 3 and cell_stdout(events) == "2\n", (saved, events)
        assert api.call("DELETE", f"/v1/sessions/{sid}").status_code == 204

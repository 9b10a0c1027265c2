"""Sessions on a real agent (API.md "Sessions"): a production sandbox whose Python keeps its
variables between cells, driven over HTTP exactly as the contract says."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import pytest

from agentproc import AgentProcess, Api, create_token, running_agent
from waiting import wait_until

pytestmark = pytest.mark.root


class SessionApi:
    """Just enough of a session client for these tests (the notebook's is tested apart)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def start(self, expect: int = 201, **body: Any) -> str:
        r = self.api.call("POST", "/v1/sessions", json=body)
        assert r.status_code == expect, r.text
        return r.json()["id"] if expect == 201 else r.json()["error"]["message"]

    def cell(self, sid: str, code: str, **body: Any) -> int:
        r = self.api.call("POST", f"/v1/sessions/{sid}/cells", json={"code": code, **body})
        assert r.status_code == 201, r.text
        return r.json()["cell"]

    def events(self, sid: str, after: int = 0, until: Any = None, timeout: float = 60) -> list[dict[str, Any]]:
        """Events from `after` until one that `until` accepts (default: the session's exit)."""
        out = []
        r = self.api.call("GET", f"/v1/sessions/{sid}/events", params={"follow": "true", "after": after},
                          stream=True, timeout=timeout)
        assert r.status_code == 200, r.text
        with r:
            for line in r.iter_lines():
                out.append(json.loads(line))
                if (until or (lambda e: e["type"] == "exit"))(out[-1]):
                    break
        return out

    def run(self, sid: str, code: str, **body: Any) -> list[dict[str, Any]]:
        """One cell's events, cell_start to cell_end."""
        n = self.cell(sid, code, **body)
        events = self.events(sid, until=lambda e: e.get("cell") == n and e["type"] == "cell_end"
                             or e["type"] == "exit")
        return [e for e in events if e.get("cell") == n]

    def record(self, sid: str) -> dict[str, Any]:
        r = self.api.call("GET", f"/v1/sessions/{sid}")
        assert r.status_code == 200, r.text
        return r.json()

    def delete(self, sid: str) -> None:
        r = self.api.call("DELETE", f"/v1/sessions/{sid}")
        assert r.status_code in (204, 404), r.text


@pytest.fixture
def sessions(agent: AgentProcess) -> SessionApi:
    return SessionApi(agent.api())


@pytest.fixture
def session(sessions: SessionApi):
    sid = sessions.start()
    yield sid
    sessions.delete(sid)


def result(events: list[dict[str, Any]]) -> str | None:
    found = [e["data"]["text/plain"] for e in events if e["type"] == "result"]
    return found[0] if found else None


def stdout(events: list[dict[str, Any]]) -> str:
    return "".join(e["data"] for e in events if e["type"] == "stdout")


# ---- the basics ----------------------------------------------------------------------------------

def test_variables_live_across_cells_in_a_production_sandbox(sessions, session):
    sessions.run(session, "import os\nx = 41")
    events = sessions.run(session, "print(os.getuid(), os.getcwd(), os.environ['JOB_ID'] == os.environ.get('JOB_ID'))\nx + 1")
    uid, cwd, _ = stdout(events).split()
    assert int(uid) >= 1_000_000 and cwd == "/work"
    assert result(events) == "42"
    assert [e["type"] for e in events] == ["cell_start", "stdout", "result", "cell_end"]
    record = sessions.record(session)
    assert record["status"] == "READY" and record["cells"] == 2 and record["owner"]
    assert set(record) >= {"id", "owner", "runtime", "limits", "network", "status", "reason", "cells",
                           "created_at", "last_active_at", "usage"}


def test_cells_queue_in_order_and_events_resume_after_seq(sessions, session):
    numbers = [sessions.cell(session, f"import time\ntime.sleep(0.05)\nprint({i})") for i in range(5)]
    assert numbers == [1, 2, 3, 4, 5]
    events = sessions.events(session, until=lambda e: e.get("cell") == 5 and e["type"] == "cell_end")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["data"] for e in events if e["type"] == "stdout"] == ["0\n", "1\n", "2\n", "3\n", "4\n"]
    middle = events[len(events) // 2]["seq"]
    again = sessions.events(session, after=middle, until=lambda e: e.get("cell") == 5 and e["type"] == "cell_end")
    assert again == events[middle:]


def test_the_runner_leaves_no_file_and_stdin_is_not_connected(sessions, session):
    events = sessions.run(session, "input()")
    error = [e for e in events if e["type"] == "error"][0]
    assert "stdin is not connected" in error["evalue"]
    assert events[-1]["status"] == "error"
    code = ("import os, sys\nprint([p for p in sys.path if '.joblet' in p], os.listdir('/work'),\n"
            "      'session_runner' in sys.modules, sys.dont_write_bytecode)")
    assert stdout(sessions.run(session, code)) == "[] [] True False\n"


def test_the_sandbox_mounts_show_no_path_of_the_agent(agent, sessions, session):
    """The runner comes as uploads, not a bind of the agent's folder: a bind's host path would show
    in the sandbox's mountinfo (the agent's root, from which a cell learns where the agent lives)."""
    code = "print(open('/proc/self/mountinfo').read())"
    mounts = [line.split() for line in stdout(sessions.run(session, code)).splitlines() if line]
    points = {fields[4] for fields in mounts}
    assert "/" in points and "/usr" in points                # the sandbox's own table
    published = f"{agent.root}/runtimes/.versions/"          # the base image's tree names it (read-only)
    from_agent = [f for f in mounts if any(str(agent.root) in x for x in f) and not f[3].startswith(published)]
    assert from_agent == [] and "/opt/joblet" not in points


def test_display_data_is_filtered_before_it_is_logged(sessions, session):
    events = sessions.run(session, "class H:\n    def _repr_html_(self):\n"
                                   "        return '<b>ok</b><script>window.jnbPwned=1</script><img src=x onerror=alert(1)>'\n"
                                   "    def _repr_javascript_(self):\n        return 'window.jnbPwned=1'\nH()")
    data = [e["data"] for e in events if e["type"] == "result"][0]
    assert data["text/html"] == "<b>ok</b><img>"
    assert "application/javascript" in data["text/plain"] and "application/javascript" not in data


def test_interrupt_stops_the_running_cell_only(sessions, session):
    sessions.run(session, "kept = 'here'")
    n = sessions.cell(session, "import time\nprint('go', flush=True)\ntime.sleep(600)")
    sessions.events(session, until=lambda e: e.get("cell") == n and e["type"] == "stdout")
    t0 = time.monotonic()
    r = sessions.api.call("POST", f"/v1/sessions/{session}/interrupt")
    assert r.status_code == 204, r.text
    events = sessions.events(session, until=lambda e: e.get("cell") == n and e["type"] == "cell_end")
    assert time.monotonic() - t0 < 10
    assert events[-1]["status"] == "interrupted"
    assert [e["ename"] for e in events if e["type"] == "error"] == ["KeyboardInterrupt"]
    assert result(sessions.run(session, "kept")) == "'here'"


def test_completion_comes_from_the_sessions_namespace(sessions, session):
    sessions.run(session, "my_frame = 1")
    r = sessions.api.call("POST", f"/v1/sessions/{session}/complete", json={"code": "x = my_f", "cursor_pos": 8})
    assert r.status_code == 200, r.text
    assert r.json() == {"matches": ["my_frame"], "cursor_start": 4, "cursor_end": 8}


def test_inputs_and_outputs_travel_as_json(sessions, session):
    events = sessions.run(session, "y = {'sum': sum(x)}", inputs={"x": [1, 2, 3]}, outputs=["y"])
    assert events[-1]["outputs"] == {"y": {"sum": 6}}


# ---- owners ----------------------------------------------------------------------------------------

def test_a_session_is_its_owners_and_the_admins(agent, sessions, session):
    other = SessionApi(Api(agent.url, create_token(agent.root, "user", "someone-else")))
    for method, path in (("GET", ""), ("POST", "/interrupt"), ("DELETE", ""), ("GET", "/events")):
        assert other.api.call(method, f"/v1/sessions/{session}{path}").status_code == 404
    r = other.api.call("POST", f"/v1/sessions/{session}/cells", json={"code": "1"})
    assert r.status_code == 404
    assert session not in [s["id"] for s in other.api.call("GET", "/v1/sessions").json()]
    admin = SessionApi(agent.api(agent.admin_token))
    assert session in [s["id"] for s in admin.api.call("GET", "/v1/sessions").json()]
    assert admin.record(session)["id"] == session
    assert session in [s["id"] for s in sessions.api.call("GET", "/v1/sessions").json()]


# ---- how sessions end ----------------------------------------------------------------------------

def _ended(sessions: SessionApi, sid: str, reason: str) -> None:
    exit_event = sessions.events(sid)[-1]
    assert exit_event == {**exit_event, "type": "exit", "status": "ENDED", "reason": reason}
    record = sessions.record(sid)
    assert (record["status"], record["reason"]) == ("ENDED", reason)
    r = sessions.api.call("POST", f"/v1/sessions/{sid}/cells", json={"code": "1"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "session_ended", r.text
    assert "start a new one" in r.json()["error"]["message"] and reason in r.json()["error"]["message"]


def test_deleted(sessions):
    sid = sessions.start()
    sessions.run(sid, "x = 1")
    sessions.delete(sid)
    _ended(sessions, sid, "deleted")


def test_idle(sessions):
    sid = sessions.start(idle_timeout_s=1)
    sessions.run(sid, "x = 1")
    _ended(sessions, sid, "idle")


def test_oom_ends_the_session_and_the_running_cell_says_so(sessions):
    sid = sessions.start(limits={"memory_mb": 64})
    n = sessions.cell(sid, "blocks = []\nwhile True:\n    blocks.append(bytearray(8 << 20))")
    events = sessions.events(sid)
    assert [e for e in events if e.get("cell") == n][-1]["type"] == "cell_end"
    assert any(e.get("ename") == "SessionEnded" for e in events)
    _ended(sessions, sid, "oom")


def test_exit_when_the_interpreter_dies(sessions):
    sid = sessions.start()
    sessions.cell(sid, "import os\nos._exit(3)")
    _ended(sessions, sid, "exit")


def test_timeout_is_the_sessions_whole_life(sessions):
    sid = sessions.start(limits={"timeout_s": 1})
    sessions.cell(sid, "import time\ntime.sleep(60)")
    _ended(sessions, sid, "timeout")


def test_lost_when_the_agent_stops_its_jobs():
    """`joblet-agent serve --stop-jobs` ends its sessions when it stops (a killed agent's sessions
    outlive it: test_restore.py)."""
    with running_agent() as agent:
        sessions = SessionApi(agent.api())
        sid = sessions.start()
        sessions.run(sid, "x = 1")
        agent.stop(signal.SIGTERM)
        agent.start()
        _ended(SessionApi(agent.api()), sid, "lost")


# ---- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, says", [
    ({"runtime": "no-such-runtime"}, "no-such-runtime"),
    ({"limits": {"memory_mb": 1 << 20}}, "maximum"),
    ({"idle_timeout_s": 10 ** 9}, "idle_timeout_s"),
    ({"env": {"JOB_ID": "x"}}, "reserved"),
    ({"command": ["sh"]}, "unknown field"),
])
def test_bad_requests_get_a_clear_400_and_leave_nothing(sessions, body, says):
    before = sessions.api.call("GET", "/v1/sessions").json()
    message = sessions.start(expect=400, **body)
    assert says in message
    assert sessions.api.call("GET", "/v1/sessions").json() == before


def test_many_sessions_start_at_once(agent, sessions):
    ids: list[str] = []
    errors: list[str] = []

    def one() -> None:
        mine = SessionApi(agent.api())   # a connection per thread
        try:
            sid = mine.start()
            ids.append(sid)
            assert result(mine.run(sid, "1 + 1")) == "2"
        except AssertionError as exc:  # noqa: PERF203
            errors.append(str(exc))

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sid in ids:
        sessions.delete(sid)
    assert not errors and len(ids) == 12


def test_a_users_live_sessions_and_a_sessions_waiting_cells_are_bounded():
    with running_agent("sessions:\n  max_per_user: 1\n  max_queued_cells: 1\n") as agent:
        sessions = SessionApi(agent.api())
        sid = sessions.start()
        assert "sessions.max_per_user" in sessions.start(expect=409)
        sessions.cell(sid, "import time\ntime.sleep(600)")   # the runner has it at once
        sessions.cell(sid, "1")                                # the one cell that may wait
        r = sessions.api.call("POST", f"/v1/sessions/{sid}/cells", json={"code": "2"})
        assert r.status_code == 409 and "1 cells waiting" in r.text, r.text
        sessions.delete(sid)
        sessions.delete(sessions.start())                      # an ended session no longer counts


# ---- what the agent keeps -------------------------------------------------------------------------

def test_deleting_an_ended_session_forgets_it(sessions):
    sid = sessions.start()
    sessions.delete(sid)
    assert sessions.record(sid)["status"] == "ENDED"
    sessions.delete(sid)
    assert sessions.api.call("GET", f"/v1/sessions/{sid}").status_code == 404
    assert sessions.api.call("GET", f"/v1/sessions/{sid}/events").status_code == 404


def test_a_cells_output_is_kept_up_to_max_output_mb_and_ended_sessions_expire():
    with running_agent("max_output_mb: 1\nsessions:\n  keep_ended_s: 0\n") as agent:
        sessions = SessionApi(agent.api())
        sid = sessions.start()
        events = sessions.run(sid, "import sys\nfor _ in range(48):\n    sys.stdout.write('x' * 65536 + '\\n')\n"
                                   "sys.stdout.flush()\nprint('tail')")
        kept = sum(len(e["data"]) for e in events if e["type"] == "stdout")
        assert kept <= (1 << 20) and "tail" not in stdout(events)
        assert any("beyond 1 MB" in e.get("data", "") for e in events if e["type"] == "stderr")
        assert stdout(sessions.run(sid, "print('next cell')")) == "next cell\n"
        sessions.delete(sid)
        agent.stop()
        agent.start()
        assert agent.api().call("GET", f"/v1/sessions/{sid}").status_code == 404


def test_one_user_holds_no_more_sessions_and_live_sandboxes_than_the_quotas():
    """sessions.max_per_user bounds a user's sessions (409); sessions count with jobs against
    quotas.live_jobs_per_user (429), so sessions are no way around it (issue 13, item 4); another
    user is served all the while, and an ended session gives its place back."""
    with running_agent("quotas: {live_jobs_per_user: 3}\nsessions: {max_per_user: 2}\n") as agent:
        api, sessions = agent.api(), SessionApi(agent.api())
        held = [sessions.start(), sessions.start()]
        jobs: list[str] = []
        try:
            assert "sessions.max_per_user" in sessions.start(expect=409)
            jobs.append(api.submit(command=["sleep", "60"]))
            r = api.call("POST", "/v1/jobs", json={"command": ["true"]})
            assert r.status_code == 429 and "live_jobs_per_user" in r.text, r.text
            gone = held.pop()
            sessions.delete(gone)
            wait_until(lambda: sessions.record(gone)["status"] == "ENDED", message="the session never ended")
            jobs.append(api.submit(command=["sleep", "60"]))
            assert "live_jobs_per_user" in sessions.start(expect=429)
            other = SessionApi(Api(agent.url, create_token(agent.root, "user", "someone-else")))
            theirs = other.start()
            assert result(other.run(theirs, "1 + 1")) == "2"
            other.delete(theirs)
        finally:
            for job in jobs:
                api.call("POST", f"/v1/jobs/{job}/stop")
            for sid in held:
                sessions.delete(sid)

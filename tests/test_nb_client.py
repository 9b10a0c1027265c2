"""`JobletClient` from a plain script (no IPython) against the real agent.

The dropped-connection test puts a real TCP proxy between client and agent and cuts every
connection mid-stream: the client must resume with `after=SEQ`, losing and repeating nothing.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from joblet_nb.core.client import JobletClient
from joblet_nb.core.errors import AgentUnavailable, AuthError, BadRequestError, NotFoundError
from joblet_nb.core.events import Event, parse_event
from joblet_nb.core.records import JobLimits, JobRecord
from joblet_nb.core.stream import JobFollower
from joblet_nb.core.request import JobRequest, Upload
from agentproc import running_agent
from nbshell import wait_ended
from waiting import wait_until


class CuttingProxy:
    """Forwards TCP to the agent; `cut()` closes every open connection at once."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.server.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.conns += [down, up]
                self.accepted += 1
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()
        self.cut()


def test_the_client_works_without_ipython():
    code = ("import sys, joblet_nb.core.client, joblet_nb.core.config, joblet_nb.core.errors, joblet_nb.core.stream\n"
            "assert 'IPython' not in sys.modules, 'the client must not need IPython'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.root
def test_health_needs_no_token(agent):
    health = JobletClient(agent.url, None).health()
    assert health.status == "ok" and health.version


@pytest.mark.root
def test_run_and_stream_events_in_order(client):
    job = client.run_job(JobRequest(script="import sys\nprint('a')\nprint('b', file=sys.stderr)"))
    events = list(client.events(job.id))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "exit" and events[-1].status == "COMPLETED"
    assert [e.data for e in events if e.type == "stdout"] == ["a\n"]
    assert [e.data for e in events if e.type == "stderr"] == ["b\n"]


@pytest.mark.root
def test_the_exit_event_carries_the_ended_record_so_a_follower_asks_for_nothing_more(client, monkeypatch):
    job = client.run_job(JobRequest(script="print('x' * 10)", limits=JobLimits(memory_mb=128)))
    exit_event = list(client.events(job.id))[-1]
    assert exit_event.type == "exit" and isinstance(exit_event.record, dict)
    assert JobRecord.from_json(exit_event.record) == client.get_job(job.id)
    assert exit_event.record["status"] == "COMPLETED" and exit_event.record["ended_at"]
    asked: list[str] = []
    real_get = JobletClient.get_job
    monkeypatch.setattr(JobletClient, "get_job", lambda self, job_id: asked.append(job_id) or real_get(self, job_id))
    result = JobFollower(client, job.id, live=False).history()
    assert asked == [] and result.record.finished and result.record.limits.memory_mb == 128
    assert result.record.usage.cpu_s is not None and result.record.ended_at == exit_event.record["ended_at"]


def test_an_exit_event_without_a_record_or_with_a_bad_one_leaves_the_record_to_a_get():
    assert parse_event({"seq": 3, "type": "exit", "status": "COMPLETED"}).ended_record() is None
    for bad in ("text", {"id": "j", "status": "RUNNING"}, {"id": "j", "status": "NOPE"}, {"status": "COMPLETED"}):
        assert parse_event({"seq": 3, "type": "exit", "status": "COMPLETED", "record": bad}).ended_record() is None
    carried = parse_event({"seq": 3, "type": "exit", "status": "FAILED", "exit_code": 2, "reason": "exit",
                           "record": {"id": "j", "status": "COMPLETED", "usage": {"cpu_s": 0.1}}}).ended_record()
    assert carried is not None and carried.status.value == "FAILED" and carried.exit_code == 2  # the event wins


@pytest.mark.root
def test_events_after_seq_give_exactly_the_rest(client):
    job = client.run_job(JobRequest(script="for i in range(5): print(i)"))
    events = list(client.events(job.id))
    rest = list(client.events(job.id, after=2))
    assert rest == events[2:]
    history = list(client.events(job.id, follow=False))
    assert history == events


@pytest.mark.root
def test_stream_resumes_across_dropped_connections(agent):
    proxy = CuttingProxy(agent.port)
    try:
        c = JobletClient(f"http://127.0.0.1:{proxy.port}", agent.user_token)
        job = c.run_job(JobRequest(script="import time\nfor i in range(40):\n    print(i, flush=True)\n"
                                          "    time.sleep(0.05)"))
        seen: list[Event] = []
        for event in c.events(job.id):
            seen.append(event)
            if event.seq in (5, 15, 25):
                proxy.cut()  # mid-stream, while the job is still printing
        assert proxy.accepted >= 4  # the first stream and at least three resumptions
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        lines = "".join(e.data for e in seen if e.type == "stdout").split()
        assert lines == [str(i) for i in range(40)]
        assert seen[-1].type == "exit"
    finally:
        proxy.close()


@pytest.mark.root
def test_stop_list_get_download_delete(client):
    job = client.run_job(JobRequest(script="open('note.txt', 'w').write('kept')\nprint('written', flush=True)\n"
                                           "import time\ntime.sleep(60)"))
    job_id = job.id
    wait_until(lambda: any(e.type == "stdout" for e in client.events(job_id, follow=False)))
    assert job_id in [j.id for j in client.list_jobs()]
    client.stop(job_id)
    record = wait_ended(client, job_id)
    assert record.status == "STOPPED" and record.reason == "stopped"
    assert client.download(job_id, "note.txt") == b"kept"
    client.delete_job(job_id)
    with pytest.raises(NotFoundError):
        client.get_job(job_id)


@pytest.mark.root
def test_uploads_inputs_and_outputs(client):
    job = client.run_job(JobRequest(
        script="total = sum(xs) + int(open('n.txt').read())",
        uploads=[Upload("n.txt", b"4", 0o644)], inputs={"xs": [1, 2, 3]}, outputs=["total"]))
    events = list(client.events(job.id))
    outputs = [e for e in events if e.type == "outputs"]
    assert outputs and outputs[0].values == {"total": 10}


@pytest.mark.root
def test_whoami_and_runtimes(client):
    assert client.whoami().role == "user"
    assert isinstance(client.runtimes(), list)


@pytest.mark.root
def test_agent_errors_become_specific_exceptions(agent, client):
    with pytest.raises(AuthError):
        JobletClient(agent.url, "not-a-token").list_jobs()
    with pytest.raises(NotFoundError):
        client.get_job("0123456789abcdef")
    with pytest.raises(BadRequestError) as bad:
        client.run_job(JobRequest(script="print(1)", env={"JOB_TYPE": "runtime-build"}))
    assert "JOB_TYPE" in str(bad.value)
    with pytest.raises(AuthError) as admin_only:
        JobletClient(agent.url, agent.user_token).build_runtime("no-such-runtime")
    assert "admin token" in str(admin_only.value)


def test_a_stopped_agent_is_one_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AgentUnavailable) as err:
        JobletClient(f"http://127.0.0.1:{port}", "t").list_jobs()
    assert "joblet-agent serve" in str(err.value) and "JOBLET_URL" in str(err.value)


@pytest.mark.root
def test_from_settings_reads_the_environment(agent, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("JOBLET_URL", agent.url)
    monkeypatch.setenv("JOBLET_TOKEN", agent.user_token)
    monkeypatch.setenv("JOBLET_ADMIN_TOKEN", agent.admin_token)
    c = JobletClient.from_settings()
    assert c.url == agent.url and c.whoami().role == "user"
    assert c.admin_token == agent.admin_token


def _client_from_the_agents_config(agent, monkeypatch) -> JobletClient:
    """The client as it is made on the agent's machine: from the config file the agent wrote alone."""
    for name in ("JOBLET_URL", "JOBLET_TOKEN", "JOBLET_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(agent.root / "client-config"))
    return JobletClient.from_settings()


@pytest.mark.root
def test_the_client_config_the_agent_writes_is_enough(agent, monkeypatch):
    """`%load_ext joblet_nb` needs no set-up on the agent's machine: the file format agrees."""
    c = _client_from_the_agents_config(agent, monkeypatch)
    assert c.url == agent.url
    assert c.whoami().role == "user"
    assert JobletClient(c.url, c.admin_token).whoami().role == "admin"


@pytest.mark.root
def test_an_agent_on_a_unix_socket(monkeypatch):
    with running_agent(unix=True) as agent:
        c = _client_from_the_agents_config(agent, monkeypatch)
        assert c.url == f"unix:{agent.unix}"
        wait_until(lambda: _answers(c))
        job = c.run_job(JobRequest(script="print('over a unix socket')"))
        events = list(c.events(job.id))
        assert [e.data for e in events if e.type == "stdout"] == ["over a unix socket\n"]


def _answers(c: JobletClient) -> bool:
    try:
        return c.health().status == "ok"
    except AgentUnavailable:
        return False


@pytest.mark.root
def test_an_https_agent_is_reached_with_its_pinned_certificate(monkeypatch):
    from joblet_nb.core.errors import CertificateError

    with running_agent(tls=True) as own:
        c = _client_from_the_agents_config(own, monkeypatch)
        assert c.url.startswith("https://") and c.cert
        job = c.run_job(JobRequest(script="print('over TLS')"))
        assert [e.data for e in c.events(job.id) if e.type == "stdout"] == ["over TLS\n"]
        with pytest.raises(CertificateError) as err:
            JobletClient(c.url, c.token).whoami()  # the system store does not know the agent
        assert "JOBLET_CERT" in str(err.value)

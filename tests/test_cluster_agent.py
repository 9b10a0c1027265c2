"""A real agent with `executor: slurm` against a real one-node Slurm with two fake GPUs: every job
and session goes through Slurm and comes back as on one host (README "Clusters")."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from agentproc import AgentProcess, Api, running_agent
from slurmcluster import SlurmCluster, node_leftovers, slurm_config
from waiting import wait_until

pytestmark = pytest.mark.root

TINY_SPEC = """\
name: tiny
language: shell
version: "1"
architectures: [x86_64, aarch64]
build: {setup: setup.sh, network: none, timeout_s: 120, memory_mb: 256, disk_mb: 32}
mounts:
  - source: tree
    target: /opt/runtimes/tiny/tree
script: {command: [/bin/sh], suffix: .sh}
test:
  command: [/bin/sh, -c, "cat /opt/runtimes/tiny/tree/hello"]
"""
TINY_SETUP = 'mkdir -p "$RUNTIME_PREFIX/tree" && echo "hello from tiny" > "$RUNTIME_PREFIX/tree/hello"\n'


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster) -> SlurmCluster:
    return slurm_cluster


@pytest.fixture
def node_root(slurm_node_root: Path) -> Path:
    return slurm_node_root


@pytest.fixture
def api(slurm_agent: AgentProcess) -> Api:
    return slurm_agent.api()


def slurm_names(cluster: SlurmCluster) -> str:
    return cluster.run("squeue", "-h", "-o", "%j").stdout


def test_a_job_goes_through_slurm_streams_live_and_names_its_node(api, cluster):
    job_id = api.submit(command=["sh", "-c", "echo first; sleep 2; echo second; echo kept > /work/out.txt; exit 3"],
                        limits={"memory_mb": 256})
    api.wait_for_output(job_id, "first")
    assert api.record(job_id)["status"] == "RUNNING", "output arrives while the job still runs"
    events = api.events(job_id)
    record = api.record(job_id)
    assert "".join(e.get("data", "") for e in events if e["type"] == "stdout") == "first\nsecond\n"
    assert (record["status"], record["reason"], record["exit_code"]) == ("FAILED", "exit", 3)
    assert record["node"] == cluster.node and record["cluster"]["engine"] == "slurm"
    assert record["cluster"]["job_id"].isdigit() and record["usage"]["cpu_s"] is not None
    assert api.call("GET", f"/v1/jobs/{job_id}/files/out.txt").text == "kept\n"
    # Slurm may still list the job as completing (CG) when the agent already has its end
    wait_until(lambda: job_id not in slurm_names(cluster), timeout=30, message=lambda: slurm_names(cluster))


def test_limits_become_slurm_asks_and_the_sandbox_still_enforces_them(api):
    oom = api.run(script="b = bytearray(200 << 20)\nprint('survived')", limits={"memory_mb": 64})
    assert (oom.record["status"], oom.record["reason"]) == ("FAILED", "oom"), oom.explain()
    slow = api.run(command=["sleep", "30"], limits={"timeout_s": 1})
    assert (slow.record["status"], slow.record["reason"]) == ("FAILED", "timeout"), slow.explain()
    killed = api.run(command=["sh", "-c", "kill -9 $$"])
    assert (killed.record["reason"], killed.record["signal"]) == ("signal", 9), killed.explain()


def test_a_gpu_job_sees_its_allocated_device_only(api):
    result = api.run(command=["sh", "-c", "ls /dev; echo CUDA=$CUDA_VISIBLE_DEVICES"], limits={"gpus": 1})
    assert [w for w in result.stdout.split() if "gpu" in w or "CUDA" in w] == ["fakegpu0", "CUDA=0"], result.explain()
    assert result.record["cluster"]["devices"] == ["fakegpu0"]
    plain = api.run(command=["sh", "-c", "ls /dev; echo CUDA=${CUDA_VISIBLE_DEVICES-unset}"])
    assert [w for w in plain.stdout.split() if "gpu" in w or "CUDA" in w] == ["CUDA=unset"], plain.explain()


def test_an_impossible_ask_is_a_400_in_the_users_terms(api):
    r = api.call("POST", "/v1/jobs", json={"command": ["true"], "limits": {"gpus": 3}})
    assert r.status_code == 400 and "3 GPUs asked, the largest node of this cluster has 2" in r.text, r.text
    r = api.call("POST", "/v1/jobs", json={"command": ["true"], "network": "bridge"})
    assert r.status_code == 400 and "Slurm" in r.text, r.text


def test_a_queued_job_is_pending_with_slurms_reason_and_stop_takes_it_out_of_the_queue(api, cluster):
    hogs = [api.submit(command=["sleep", "60"], limits={"gpus": 1}) for _ in range(2)]
    for hog in hogs:
        api.wait_for_status(hog, "RUNNING")
    waiting = api.submit(command=["echo", "never"], limits={"gpus": 1})
    record = wait_until(lambda: (r := api.record(waiting))["message"] and "Resources" in r["message"] and r,
                        timeout=30, message=lambda: api.record(waiting))
    assert record["status"] == "PENDING", record
    assert api.call("POST", f"/v1/jobs/{waiting}/stop").status_code == 200
    assert api.wait_for_status(waiting)["status"] == "STOPPED"
    assert waiting not in slurm_names(cluster), "the stopped job is gone from squeue"
    for hog in hogs:
        api.call("POST", f"/v1/jobs/{hog}/stop")
        assert api.wait_for_status(hog)["status"] == "STOPPED"
    wait_until(lambda: not any(h in slurm_names(cluster) for h in hogs), timeout=30)


def test_a_node_that_goes_down_ends_its_job_lost_and_leaves_nothing(api, cluster, node_root):
    job_id = api.submit(command=["sh", "-c", "echo up; sleep 60"])
    api.wait_for_output(job_id, "up")
    cluster.set_node("down", "jnb node failure test")
    try:
        record = api.wait_for_status(job_id)
    finally:
        cluster.set_node("resume")
    assert (record["status"], record["reason"]) == ("FAILED", "lost"), record
    assert cluster.node in record["message"] and "failed" in record["message"], record
    wait_until(lambda: not node_leftovers(node_root), timeout=30, message=lambda: node_leftovers(node_root))
    assert job_id not in slurm_names(cluster)
    cluster.wait_node(("idle", "mixed"))


def test_a_session_keeps_its_variables_through_slurm(api, cluster):
    r = api.call("POST", "/v1/sessions", json={"limits": {"memory_mb": 256}})
    assert r.status_code == 201, r.text
    session = r.json()["id"]
    try:
        for code in ("x = 40", "x + 2"):
            assert api.call("POST", f"/v1/sessions/{session}/cells", json={"code": code}).status_code == 201
        events = wait_until(lambda: (ev := _session_events(api, session)) and
                            sum(e["type"] == "cell_end" for e in ev) == 2 and ev, timeout=60)
        results = [e for e in events if e["type"] == "result"]
        assert results and results[-1]["data"]["text/plain"] == "42", events
        assert slurm_names(cluster).strip(), "the session is a Slurm job while it lives"
        api.call("POST", f"/v1/sessions/{session}/cells", json={"code": "import time\nprint('busy', flush=True)\n"
                                                                          "time.sleep(60)"})
        wait_until(lambda: any(e.get("data") == "busy\n" for e in _session_events(api, session)), timeout=60)
        assert api.call("POST", f"/v1/sessions/{session}/interrupt").status_code == 204
        ends = wait_until(lambda: [e for e in _session_events(api, session) if e["type"] == "cell_end"][2:], 60)
        assert ends[0]["status"] == "interrupted", ends
    finally:
        api.call("DELETE", f"/v1/sessions/{session}")
    wait_until(lambda: not slurm_names(cluster).strip(), timeout=30)


def _session_events(api: Api, session: str) -> list[dict]:
    r = api.call("GET", f"/v1/sessions/{session}/events", params={"follow": "false"})
    return [json.loads(line) for line in r.text.splitlines() if line]


def _build_tiny(agent: AgentProcess) -> None:
    admin = agent.api(agent.admin_token)
    r = admin.call("POST", "/v1/runtimes/tiny/build", json={"spec": TINY_SPEC, "files": {"setup.sh": TINY_SETUP}})
    assert r.status_code == 201, r.text
    events = admin.events(r.json()["id"], timeout=600)
    assert events[-1]["status"] == "COMPLETED", events[-3:]


def test_a_runtime_job_runs_on_a_node_that_has_the_runtime_and_never_on_one_without(cluster, node_root):
    with running_agent(slurm_config(node_root), env=cluster.env) as shared:
        _build_tiny(shared)
        result = shared.api().run(script="cat /opt/runtimes/tiny/tree/hello", runtime="tiny")
        assert result.stdout == "hello from tiny\n", result.explain()
    elsewhere = Path(tempfile.mkdtemp(prefix="jnb-noruntimes-"))
    try:
        with running_agent(slurm_config(node_root, f"  runtimes: {elsewhere}\n"), env=cluster.env) as lacking:
            _build_tiny(lacking)
            result = lacking.api().run(script="echo SHOULD-NOT-RUN", runtime="tiny")
            assert (result.record["status"], result.record["reason"]) == ("FAILED", "setup"), result.explain()
            assert "not published" in result.record["message"] and cluster.node in result.record["message"]
            assert "SHOULD-NOT-RUN" not in result.stdout
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_an_agent_killed_while_its_job_runs_ends_it_lost_and_cancelled_at_its_next_start(cluster, node_root):
    with running_agent(slurm_config(node_root), env=cluster.env) as agent:
        api = agent.api()
        job_id = api.submit(command=["sh", "-c", "echo up; sleep 120"])
        api.wait_for_output(job_id, "up")
        assert agent.proc is not None
        agent.proc.kill()
        agent.proc.wait()
        assert job_id in slurm_names(cluster), "srun and the Slurm job outlive the agent"
        agent.start()
        record = api.record(job_id)
        assert (record["status"], record["reason"]) == ("FAILED", "lost"), record
        wait_until(lambda: job_id not in slurm_names(cluster), timeout=30)
        wait_until(lambda: not node_leftovers(node_root), timeout=30, message=lambda: node_leftovers(node_root))


def test_an_agent_whose_slurm_does_not_answer_or_has_no_node_refuses_to_start_saying_why(cluster, node_root, tmp_path):
    dead = tmp_path / "slurm.conf"  # the cluster's own config with a controller port nobody listens on
    dead.write_text("\n".join("SlurmctldPort=9" if line.startswith("SlurmctldPort=") else line
                              for line in cluster.conf.read_text().splitlines()) + "\n")
    cases = [({**cluster.env, "SLURM_CONF": str(dead)}, "", "Slurm does not answer"),
             (cluster.env, "  partition: jnb-nosuch\n", "partition jnb-nosuch has no nodes")]
    for env, extra, why in cases:
        with pytest.raises(RuntimeError, match="agent exited") as exited:
            with running_agent(slurm_config(node_root, extra), env=env):
                pass
        assert why in str(exited.value), str(exited.value)[-2000:]


def test_a_queued_job_slurm_will_never_start_ends_failed_with_slurms_reason(api, cluster):
    """An admin holds the queued job (reason JobHeldAdmin, after which Slurm never starts it by
    itself): the job does not wait for ever, it ends FAILED with Slurm's reason and leaves squeue."""
    hogs = [api.submit(command=["sleep", "60"], limits={"gpus": 1}) for _ in range(2)]
    try:
        for hog in hogs:
            api.wait_for_status(hog, "RUNNING")
        waiting = api.submit(command=["echo", "never"], limits={"gpus": 1})
        wait_until(lambda: "Resources" in (api.record(waiting)["message"] or ""), timeout=30,
                   message=lambda: api.record(waiting))
        slurm_id = next(line.split()[0] for line in cluster.run("squeue", "-h", "-o", "%i %j").stdout.splitlines()
                        if line.endswith(waiting))
        cluster.run("scontrol", "hold", slurm_id)
        record = api.wait_for_status(waiting, timeout=60)
        assert (record["status"], record["reason"]) == ("FAILED", "setup"), record
        assert "JobHeldAdmin" in record["message"], record
        wait_until(lambda: waiting not in slurm_names(cluster), timeout=30)
    finally:
        for hog in hogs:
            api.call("POST", f"/v1/jobs/{hog}/stop")
        wait_until(lambda: not any(h in slurm_names(cluster) for h in hogs), timeout=60)

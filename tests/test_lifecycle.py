"""How jobs end: exit, failure, OOM, timeout, stop, failed set-up, a crashed agent. Each ending is
reported with the right status and reason, and leaves nothing behind."""

from __future__ import annotations

import base64
import json
import os
import signal
import sys

import pytest

from agentproc import AgentProcess, leftovers, running_agent

pytestmark = pytest.mark.root


def _assert_clean(agent: AgentProcess, job_id: str) -> None:
    agent.api().settle(job_id)  # its cleanup follows its exit event; a stop waits for it
    left = [item for item in leftovers(agent.root) if job_id in item]
    assert not left, left


def test_exit_code_is_reported(api, agent):
    result = api.run(command=["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert result.record["status"] == "FAILED"
    assert (result.record["reason"], result.record["exit_code"]) == ("exit", 3)
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    _assert_clean(agent, result.id)


def test_jobs_are_the_first_choice_of_a_host_wide_oom_kill(api):
    result = api.run(command=["cat", "/proc/self/oom_score_adj"])
    assert result.stdout == "1000\n", result.explain()


def test_the_job_starts_with_no_signal_blocked_or_ignored(api):
    """The init holds forwarded signals until its handlers exist; the job itself inherits none of it."""
    result = api.run(command=["cat", "/proc/self/status"])  # coreutils: the base image has no grep
    masks = [line for line in result.stdout.splitlines() if line.startswith(("SigBlk:", "SigIgn:"))]
    assert masks == ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"], result.explain()


def test_unknown_command_fails_with_a_message(api):
    result = api.run(command=["no-such-program-jnb"])
    assert result.record["exit_code"] == 127
    assert "no-such-program-jnb: command not found" in result.stderr


def test_oom_kill_is_reported_as_oom(api, agent):
    result = api.run(script="b = bytearray(400 * 1024 * 1024)\nprint('not killed')",
                     limits={"memory_mb": 48})
    assert (result.record["status"], result.record["reason"]) == ("FAILED", "oom"), result.explain()
    assert "not killed" not in result.stdout
    _assert_clean(agent, result.id)


def test_timeout_is_reported_as_timeout(api, agent):
    result = api.run(command=["sleep", "60"], limits={"timeout_s": 1})
    assert (result.record["status"], result.record["reason"]) == ("FAILED", "timeout"), result.explain()
    assert result.record["ended_at"] - result.record["started_at"] < 30
    _assert_clean(agent, result.id)


def test_stop_sends_sigterm_to_the_job_then_ends_it(api, agent):
    script = ("import signal, sys, time\n"
              "def bye(*_):\n    print('got SIGTERM', flush=True); sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(60)\n")
    job_id = api.submit(script=script)
    api.wait_for_output(job_id, "ready")
    assert api.call("POST", f"/v1/jobs/{job_id}/stop").status_code == 200
    events = api.events(job_id)
    record = api.call("GET", f"/v1/jobs/{job_id}").json()
    assert "got SIGTERM" in "".join(e.get("data", "") for e in events)
    assert (record["status"], record["reason"]) == ("STOPPED", "stopped")
    _assert_clean(agent, job_id)


def test_stop_kills_a_job_that_ignores_sigterm(agent):
    """With a short grace period, SIGKILL follows SIGTERM."""
    with running_agent("stop_grace_s: 0.5\n") as own:
        api = own.api()
        job_id = api.submit(script="import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                   "print('ready', flush=True)\ntime.sleep(120)\n")
        api.wait_for_output(job_id, "ready")
        api.call("POST", f"/v1/jobs/{job_id}/stop")
        events = api.events(job_id, timeout=30)
        assert events[-1]["status"] == "STOPPED"
        _assert_clean(own, job_id)


def test_failed_setup_is_reported_as_setup_with_the_step(api, agent):
    """An upload that needs a file to be a folder makes the sandbox set-up fail: jnb-init's root
    build names the step and the path, and nothing of the job (mount, cgroup, folder) is left."""
    b64 = base64.b64encode(b"x").decode()
    result = api.run(command=["true"], uploads=[{"path": "a", "content_b64": b64},
                                                {"path": "a/b", "content_b64": b64}])
    assert (result.record["status"], result.record["reason"]) == ("FAILED", "setup"), result.explain()
    message = result.record["message"]
    assert message.startswith("build root: ") and "work/a/b" in message, message
    _assert_clean(agent, result.id)


def test_uploads_land_in_work_with_their_mode(api):
    script_b64 = base64.b64encode(b"#!/bin/sh\necho uploaded script ran\n").decode()
    result = api.run(command=["sh", "-c", "./tools/run.sh && stat -c %a tools/run.sh && cat data/x.csv"],
                     uploads=[{"path": "tools/run.sh", "content_b64": script_b64, "mode": 0o755},
                              {"path": "data/x.csv", "content_b64": base64.b64encode(b"a,b\n").decode()}])
    assert result.stdout == "uploaded script ran\n755\na,b\n", result.explain()


def test_files_left_in_work_can_be_downloaded_until_delete(api):
    result = api.run(command=["sh", "-c", "mkdir -p out && printf 'result' > out/r.txt"])
    r = api.call("GET", f"/v1/jobs/{result.id}/files/out/r.txt")
    assert (r.status_code, r.content) == (200, b"result")
    assert api.call("DELETE", f"/v1/jobs/{result.id}").status_code == 204
    assert api.call("GET", f"/v1/jobs/{result.id}/files/out/r.txt").status_code == 404
    assert api.call("GET", f"/v1/jobs/{result.id}").status_code == 404


def test_inputs_and_outputs_travel_as_json(api):
    result = api.run(script="total = sum(xs) * factor\nlabel = 'done'", inputs={"xs": [1, 2, 3], "factor": 2},
                     outputs=["total", "label", "nope"])
    outputs = [e for e in result.events if e["type"] == "outputs"]
    assert outputs and outputs[0]["values"] == {"total": 12, "label": "done"}, result.explain()
    assert outputs[0]["missing"] == ["nope"]
    assert result.events[-1]["type"] == "exit"


def test_events_resume_after_seq_without_loss_or_repeat(api):
    result = api.run(command=["sh", "-c", "for i in $(seq 1 200); do echo line $i; done"])
    full = result.events
    for cut in (0, 1, len(full) // 2, len(full) - 1):
        rest = api.events(result.id, after=full[cut]["seq"] if cut else 0)
        assert [e["seq"] for e in rest] == [e["seq"] for e in full[(cut + 1 if cut else 0):]]
    assert "".join(e["data"] for e in full if e["type"] == "stdout").count("line") == 200


def test_live_follow_sees_output_while_the_job_runs(api):
    job_id = api.submit(script="import time\nfor i in range(3):\n    print('tick', i, flush=True); time.sleep(0.3)\n")
    r = api.call("GET", f"/v1/jobs/{job_id}/events", params={"follow": "true"}, stream=True)
    seen, record_status = "", None
    for line in r.iter_lines():
        seen += json.loads(line).get("data", "")
        if "tick 0\n" in seen and record_status is None:
            record_status = api.call("GET", f"/v1/jobs/{job_id}").json()["status"]
    assert record_status == "RUNNING", seen


def _job_processes(job_id: str, name: str) -> list[int]:
    """The host's pids of the processes named `name` in the job's cgroup."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and f"/job-{job_id}" in open(f"/proc/{entry.name}/cgroup").read() \
                    and open(f"/proc/{entry.name}/comm").read().strip() == name:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_running_jobs_pid_1_is_the_small_init_with_only_what_a_reaper_needs(api):
    """A job's PID 1 is jnb-init (no Python process for the job's whole life); once the job runs
    it holds root's uid, CAP_KILL alone in every set, no_new_privs; it forwards a stop's SIGTERM
    (the job's trap answers) and reports the job's exit code."""
    from joblet_agent.sandbox.initplan import BINARY

    job_id = api.submit(command=["sh", "-c", "trap 'echo got TERM; exit 7' TERM; echo ready; "
                                             "while :; do sleep 0.1; done"])
    try:
        api.wait_for_output(job_id, "ready")
        (init,) = _job_processes(job_id, "jnb-init")
        assert os.path.realpath(f"/proc/{init}/exe") == os.path.realpath(BINARY)
        fields = dict(line.split(":", 1) for line in open(f"/proc/{init}/status").read().splitlines())
        assert fields["Uid"].split()[:2] == ["0", "0"]
        for caps in ("CapInh", "CapAmb"):
            assert int(fields[caps], 16) == 0, (caps, fields[caps])
        for caps in ("CapPrm", "CapEff", "CapBnd"):
            assert int(fields[caps], 16) == 1 << 5, (caps, fields[caps])  # CAP_KILL
        assert fields["NoNewPrivs"].strip() == "1"
    finally:
        api.call("POST", f"/v1/jobs/{job_id}/stop")
    events = api.events(job_id)
    assert "got TERM" in "".join(e.get("data", "") for e in events if e["type"] == "stdout")
    assert events[-1]["exit_code"] == 7, events[-1]


def test_usage_is_reported_while_the_job_runs(api):
    job_id = api.submit(script="import time\nb = bytearray(32 << 20)\nprint('ready', flush=True)\n"
                               "end = time.time() + 60\nwhile time.time() < end: pass\n")
    try:
        api.wait_for_output(job_id, "ready")
        usage = api.call("GET", f"/v1/jobs/{job_id}").json()["usage"]
        assert usage["memory_peak_bytes"] >= 32 << 20 and usage["cpu_s"] > 0, usage
    finally:
        api.call("POST", f"/v1/jobs/{job_id}/stop")
        api.events(job_id)


def test_a_job_whose_holder_died_while_the_agent_was_away_is_lost_and_swept(tmp_path):
    """The one case the agent cannot know how a job ended: its holder was killed (so nothing was
    recorded) while no agent ran. The job ends `lost`, saying why, and nothing of it is left."""
    with running_agent() as own:
        own.stop_jobs = False
        api = own.api()
        job_id = api.submit(command=["sleep", "300"])
        api.wait_for_status(job_id, "RUNNING")
        own.stop(signal.SIGKILL)
        holder = json.loads((own.root / "state" / "jobs" / job_id / "holder.json").read_text())
        os.kill(holder["pid"], signal.SIGKILL)
        own.start()
        record = own.api().call("GET", f"/v1/jobs/{job_id}").json()
        assert (record["status"], record["reason"]) == ("FAILED", "lost"), record
        assert "holder ended without recording" in record["message"]
        assert own.api().events(job_id)[-1]["reason"] == "lost"
        assert not leftovers(own.root, running=True)


def test_agent_refuses_to_start_without_root(tmp_path):
    """The CLI run as an unprivileged user (in a forked child, so no interpreter path must be
    readable by that user) exits 2 and names what is missing."""
    import traceback

    import uvicorn  # noqa: F401  (imported here: the unprivileged child cannot read /root)
    from joblet_agent.api import app as api
    from joblet_agent import cli
    from joblet_agent.sandbox import preflight
    from joblet_agent.jobs import service as jobs, sweep
    from joblet_agent.builds import service as runtimes

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.close(read)
            sys.stderr = open(write, "w", closefd=False)
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            code = cli.main(["serve", "--root", str(tmp_path / "r"), "--listen", "127.0.0.1:1"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        stderr = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2, stderr
    assert "must run as root" in stderr


def test_all_jobs_together_are_bounded_by_the_agents_cgroup(agent):
    """The agent's parent cgroup carries agent_limits: many jobs, each within its own limits, still
    cannot take the whole host. Checked in the files of whichever cgroup version this host runs."""
    from joblet_agent.config import AgentLimits
    from joblet_agent.paths import AgentPaths
    from joblet_agent.sandbox import cgroups

    parent = AgentPaths.at(agent.root).cgroup_parent()
    driver = cgroups.detect(parent)
    expected = AgentLimits()
    if driver.version == "v1":
        pids = open(f"/sys/fs/cgroup/pids/{parent}/pids.max").read().strip()
        memory = int(open(f"/sys/fs/cgroup/memory/{parent}/memory.limit_in_bytes").read())
    else:
        pids = open(f"/sys/fs/cgroup/{parent}/pids.max").read().strip()
        memory = int(open(f"/sys/fs/cgroup/{parent}/memory.max").read())
    assert pids == str(expected.pids)
    assert memory == expected.memory_mb << 20

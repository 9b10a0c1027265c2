"""What the agent keeps for a user, and for how long (issue 13, item 5).

A job's /work copy is bounded in files and folders, not only in bytes (empty files cost an inode
each); what one user keeps over all their jobs is bounded in jobs, files and bytes; finished jobs go
after `quotas.retention_days`; and a DELETE of a job that kept many files does not hold up the
agent's event loop. Each test runs an agent of its own with small quotas.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import requests

from agentproc import AgentProcess, Api, create_token, running_agent
from waiting import wait_until

pytestmark = pytest.mark.root


def make_files(count: int, folder: str = "many") -> str:
    return (f"import os\nos.makedirs({folder!r}, exist_ok=True)\n"
            f"for i in range({count}):\n    os.close(os.open(f'{folder}/{{i}}', os.O_CREAT | os.O_WRONLY, 0o600))\n"
            f"print('made', flush=True)\n")


def kept_entries(agent: AgentProcess, job_id: str) -> int:
    work = Path(agent.root) / "state" / "jobs" / job_id / "work"
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(work))


def test_the_work_copy_keeps_at_most_work_files_entries() -> None:
    """30,000 empty files on a 256 MB disk (65,536 inodes): the copy stops at quotas.work_files
    and says so; the job itself completed."""
    with running_agent("quotas: {work_files: 1000}\n") as agent:
        result = agent.api().run(script=make_files(30_000), limits={"disk_mb": 256})
        assert result.record["status"] == "COMPLETED", result.explain()
        kept = kept_entries(agent, result.id)
        assert kept <= 1000, f"the agent kept {kept} files and folders of the job's /work"
        assert "over 1000 files and folders" in result.stderr, result.stderr
        assert result.record["kept_work"]["files"] == kept, result.record


def test_a_user_keeps_no_more_files_than_the_quota_and_others_are_not_held_up() -> None:
    """Two jobs of 600 files each against a quota of 1,000: the second keeps what is left, a third
    is refused (429, naming the quota) until the user deletes; another user is not affected."""
    config = "quotas: {work_files: 5000, kept_files_per_user: 1000}\n"
    with running_agent(config) as agent:
        api = agent.api()
        first = api.run(script=make_files(600), limits={"disk_mb": 64})
        second = api.run(script=make_files(600), limits={"disk_mb": 64})
        kept = kept_entries(agent, first.id), kept_entries(agent, second.id)
        assert kept[0] > 600 and sum(kept) <= 1000, f"kept {kept} files and folders, quota 1000"
        _refused_until_one_is_deleted(agent, api, first.id, "kept_files_per_user")


def write_blocks(count: int, size: int = 256 << 10) -> list[str]:
    """A command (no script file in /work) that leaves `count` blocks of `size` bytes in /work."""
    return ["sh", "-c", f"for i in $(seq {count}); do head -c {size} /dev/urandom > block-$i; done"]


def kept_bytes(agent: AgentProcess, job_id: str) -> int:
    work = Path(agent.root) / "state" / "jobs" / job_id / "work"
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(work) for f in files)


def test_a_user_keeps_no_more_bytes_than_the_quota() -> None:
    """Two jobs of 1.5 MB each against a quota of 2 MB: the second keeps the 0.5 MB left and says
    what it left behind, a third job is refused (429, naming the quota) until the user deletes."""
    with running_agent("quotas: {kept_mb_per_user: 2}\n") as agent:
        api = agent.api()
        first = api.run(command=write_blocks(6), limits={"disk_mb": 64})
        second = api.run(command=write_blocks(6), limits={"disk_mb": 64})
        assert first.record["status"] == second.record["status"] == "COMPLETED", second.explain()
        kept = kept_bytes(agent, first.id), kept_bytes(agent, second.id)
        assert kept == (6 * 256 << 10, 2 * 256 << 10), f"kept {kept} bytes, quota 2 MB"
        assert "not kept" in second.stderr and "block-" in second.stderr, second.stderr
        assert second.record["kept_work"]["bytes"] == kept[1], second.record
        _refused_until_one_is_deleted(agent, api, first.id, "kept_mb_per_user")


def test_a_user_keeps_no_more_jobs_than_the_quota() -> None:
    with running_agent("quotas: {kept_jobs_per_user: 3}\n") as agent:
        api = agent.api()
        jobs = [api.run(command=["true"]).id for _ in range(3)]
        refused = api.call("POST", "/v1/jobs", json={"command": ["true"]})
        assert refused.status_code == 429 and "kept_jobs_per_user" in refused.text, refused.text
        assert api.call("DELETE", f"/v1/jobs/{jobs[0]}").status_code == 204
        assert api.run(command=["true"]).record["status"] == "COMPLETED"


def test_finished_jobs_go_after_retention_days() -> None:
    """retention_days of 0.0001 (8.6 s), looked at every second: a finished job is gone, its files
    too; a running one stays."""
    with running_agent("quotas: {retention_days: 0.0001, retention_check_s: 1}\n") as agent:
        api = agent.api()
        done = api.run(script="open('kept.txt', 'w').write('x')")
        running = api.submit(command=["sleep", "30"])
        folder = Path(agent.root) / "state" / "jobs" / done.id
        assert folder.is_dir()
        wait_until(lambda: api.call("GET", f"/v1/jobs/{done.id}").status_code == 404, timeout=120,
                   message="the finished job was never removed")
        # the record goes at once, its folder on a worker thread right after
        wait_until(lambda: not folder.exists(), timeout=60, message="the job's record went, its folder stayed")
        assert api.record(running)["status"] == "RUNNING"
        api.call("POST", f"/v1/jobs/{running}/stop")
        api.wait_for_status(running)
        audit = (Path(agent.root) / "logs" / "audit.log").read_text()
        assert f'"action": "expire", "job": "{done.id}"' in audit


def test_delete_of_many_files_leaves_the_agent_answering() -> None:
    """A job that kept 150,000 empty files: while its DELETE runs (seen on disk: the folder is being
    emptied), /v1/health is answered before the folder is gone."""
    files = 150_000
    config = f"quotas: {{work_files: {files + 10}, kept_files_per_user: {files + 10}}}\n"
    with running_agent(config) as agent:
        api = agent.api()
        result = api.run(script=make_files(files), limits={"disk_mb": 1024, "timeout_s": 600})
        assert result.record["status"] == "COMPLETED", result.explain()
        many = Path(agent.root) / "state" / "jobs" / result.id / "work" / "many"
        assert sum(1 for _ in many.iterdir()) == files
        deleting = threading.Thread(target=api.call, args=("DELETE", f"/v1/jobs/{result.id}"),
                                    kwargs={"timeout": 600})
        deleting.start()
        try:
            wait_until(lambda: not many.exists() or _emptier(many, files), timeout=120, interval=0.001,
                       message="the DELETE never started removing files")
            answer = requests.get(agent.url + "/v1/health", timeout=120)
            still_there = many.exists()
        finally:
            deleting.join()
        assert answer.status_code == 200
        assert still_there, "/v1/health was answered only once the DELETE was over: it ran on the event loop"
        assert not many.exists()


def _emptier(folder: Path, full: int) -> bool:
    try:
        return sum(1 for _ in folder.iterdir()) < full
    except FileNotFoundError:
        return True


def _refused_until_one_is_deleted(agent: AgentProcess, api: Api, kept_id: str, quota: str) -> None:
    """A user at a kept-work quota: a new job is refused naming it, another user is not, and
    deleting one of the user's kept jobs lets the next one run."""
    refused = api.call("POST", "/v1/jobs", json={"command": ["true"]})
    assert refused.status_code == 429 and quota in refused.text, refused.text
    other = Api(agent.url, create_token(agent.root, "user", "someone-else"))
    assert other.run(command=["true"]).record["status"] == "COMPLETED"
    assert api.call("DELETE", f"/v1/jobs/{kept_id}").status_code == 204
    assert api.run(command=["true"]).record["status"] == "COMPLETED"

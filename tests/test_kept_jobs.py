"""Finished jobs that nobody deletes (issue 11: the idle agent's memory): each costs the agent a
bounded few hundred bytes and no object of its own but one, and every call of API.md answers for
it as before (record, list, events, files, delete, quotas, retention, after a restart too).

Memory is counted deterministically (tracemalloc and the garbage collector's objects, in an agent
in this process), never as RSS or time.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from agentproc import running_agent, sweep_cgroups
from waiting import run_coroutine

from joblet_agent.auth import Principal
from joblet_agent.contract import JobStatus
from joblet_agent.jobs.jobstore import JobStore
from joblet_agent.jobs.verdict import Verdict
from joblet_agent.models import ClusterRef, JobLimits, JobRecord, KeptWork, Usage

BYTES_PER_JOB = 1500     # a shelved record is about 900 (its JSON 350); a kept model and log were 5,300
OBJECTS_PER_JOB = 2      # its shelf entry (main kept 16: the models' sets, the lists, the log's deque and Event)

ALICE, BOB = (Principal(id=name, name=name, role="user") for name in ("alice", "bob"))
ADMIN = Principal(id="root", name="root", role="admin")


def _record(job_id: str, owner: str, created_at: float, **extra: Any) -> JobRecord:
    return JobRecord(id=job_id, owner=owner, limits=JobLimits(cpu_percent=50, memory_mb=64, timeout_s=30.0),
                     network="none", command=["sh", "-c", "echo é"], created_at=created_at, **extra)


def test_a_shelved_record_reads_back_as_the_model_it_was(tmp_path: Path) -> None:
    """Every field, defaults and set ones, a cluster's reference and usage: the same JSON as the
    model before it was shelved; a finished record leaves `records`, a running one stays a model."""
    store = JobStore(tmp_path)
    done = _record("00112233aabbccdd", "alice", 1.0, node="n1", runtime="python-3.11",
                   cluster=ClusterRef(engine="slurm", job_id="42", devices=["0"]))
    running = _record("ffeeddccbbaa9988", "bob", 2.0)
    for record in (done, running):
        store.add(record)
    done.usage, done.kept_work = Usage(cpu_s=0.25, memory_peak_bytes=1 << 20), KeptWork(files=3, bytes=4096)
    before = done.model_dump(mode="json")
    store.finish(done, Verdict(JobStatus.FAILED, "exit", "it failed", exit_code=3))
    after = done.model_dump(mode="json")
    assert after != before and after["status"] == "FAILED"
    assert done.id in store.shelf and done.id not in store.records and done.id not in store.logs
    assert running.id in store.records
    again = store.get(done.id)
    assert again is not None and again.model_dump(mode="json") == after
    assert again is not store.get(done.id)  # a copy each time: nothing changes a finished record in place
    assert JobStore(tmp_path).load() and store.shelf.get(done.id) == again  # and on disk the same


def test_shelved_records_answer_listings_owners_quotas_and_retention(tmp_path: Path) -> None:
    from joblet_agent.config import AgentConfig
    from joblet_agent.jobs.quota import QuotaKeeper

    store = JobStore(tmp_path)
    records = [_record(f"{i:016x}", "alice" if i % 3 else "bob", 100.0 - i) for i in range(9)]
    for i, record in enumerate(records):
        store.add(record)
        if i != 4:
            record.kept_work = KeptWork(files=1, bytes=1000 * i)
            store.finish(record, Verdict(JobStatus.COMPLETED, "exit", exit_code=0))
    assert len(store.shelf.entries) == 8 and list(store.records) == [records[4].id]
    mine = store.visible_to(ALICE)
    assert [r.id for r in mine] == [r.id for r in sorted(records, key=lambda r: r.created_at) if r.owner == "alice"]
    assert [r.id for r in store.visible_to(ADMIN)] == [r.id for r in sorted(records, key=lambda r: r.created_at)]
    assert store.get_for(BOB, records[1].id) is None and store.get_for(ALICE, records[1].id) is not None
    assert store.get_for(ADMIN, records[0].id) is not None and store.get_for(ALICE, "0" * 16) is None
    quota = QuotaKeeper(store, AgentConfig())
    assert quota.running("alice") == 1 and quota.running("bob") == 0  # records[4] is alice's
    assert quota.kept_bytes("alice") == sum(1000 * i for i in (1, 2, 5, 7, 8))
    store.forget(records[1].id)
    assert quota.kept_bytes("alice") == sum(1000 * i for i in (2, 5, 7, 8)) and store.get(records[1].id) is None
    log = store.log(records[2].id)
    assert log.closed and records[2].id not in store.logs  # a shelved job's log: made for its caller, not kept


def _walked(store: JobStore, owner: str) -> tuple[int, int, int]:
    """What an owner keeps, counted the long way: every summary."""
    mine = [s for s in store.summaries() if s.owner == owner]
    return len(mine), sum(s.kept_files for s in mine), sum(s.kept_bytes for s in mine)


def test_the_kept_tally_follows_every_change_of_the_store(tmp_path: Path) -> None:
    """The per-owner tally the quota check reads (no walk of every kept record per job) says what
    a walk says after adds, ends, a record settled again, deletes and a reload; the quota check
    refuses on it, and lets a job in again once one is deleted."""
    from joblet_agent.config import AgentConfig
    from joblet_agent.errors import TooMany
    from joblet_agent.jobs.quota import QuotaKeeper

    store = JobStore(tmp_path)
    records = [_record(f"{i:016x}", "alice" if i % 2 else "bob", float(i)) for i in range(7)]
    for i, record in enumerate(records):
        store.add(record)
        if i != 3:  # a running one of alice's
            record.kept_work = KeptWork(files=i, bytes=100 * i)
            store.finish(record, Verdict(JobStatus.COMPLETED, "exit", exit_code=0))
    again = store.get(records[5].id)
    assert again is not None
    store.settle(again, Verdict(JobStatus.FAILED, "exit", exit_code=1))  # shelved twice: counted once
    store.remove(records[1].id)
    for owner in ("alice", "bob", "carol"):
        assert store.kept_by(owner) == _walked(store, owner), owner
    assert store.kept_by("alice") == (2, 5, 500) and store.kept_by("carol") == (0, 0, 0)  # 3 running, 5 ended
    loaded = JobStore(tmp_path)
    loaded.load()
    for owner in ("alice", "bob"):
        assert loaded.kept_by(owner) == _walked(loaded, owner) == _walked(store, owner), owner
    config = AgentConfig.model_validate({"quotas": {"kept_jobs_per_user": 3, "kept_files_per_user": 50}})
    quota = QuotaKeeper(loaded, config)
    assert quota.admit("alice", [], True, 1 << 20).bytes == 1 << 20
    with pytest.raises(TooMany, match="you keep 4 jobs"):
        quota.admit("bob", [], True, 1 << 20)
    loaded.forget(records[0].id)
    loaded.forget(records[2].id)
    assert quota.admit("bob", [], True, 1 << 20).files == 50 - (4 + 6)
    assert loaded.kept_by("bob") == _walked(loaded, "bob") == (2, 10, 1000)


def test_retention_finds_shelved_jobs(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from joblet_agent.config import AgentConfig
    from joblet_agent.jobs.retention import expired

    store = JobStore(tmp_path)
    old, new = _record("00000000000000aa", "alice", 10.0), _record("00000000000000bb", "alice", time.time())
    for record in (old, new):
        store.add(record)
    store.settle(old, Verdict(JobStatus.COMPLETED, "exit", exit_code=0), ended_at=11.0)
    store.finish(new, Verdict(JobStatus.COMPLETED, "exit", exit_code=0))
    assert old.id in store.shelf and new.id in store.shelf
    service = SimpleNamespace(store=store, live={}, config=AgentConfig())
    assert expired(service, time.time()) == [old.id]  # type: ignore[arg-type]


# ---- with real jobs ------------------------------------------------------------------------


def _in_process_service() -> Any:
    from joblet_agent.cluster.launcher_client import Launcher
    from joblet_agent.config import AgentConfig
    from joblet_agent.jobs.service import JobService
    from joblet_agent.paths import AgentPaths
    from joblet_agent.sandbox import cgroups

    root = Path(tempfile.mkdtemp(prefix="jnb-test-kept-"))
    paths = AgentPaths.at(root)
    paths.ensure()
    launcher = Launcher(paths.cgroup_parent())
    launcher.start()
    return root, paths, launcher, JobService(paths, AgentConfig(), cgroups.detect(paths.cgroup_parent()), launcher)


async def _jobs(service: Any, n: int) -> None:
    from joblet_agent.models import JobRequest

    for _ in range(n):
        record = await service.start(ALICE, JobRequest(command=["true"]))
        ended = await service.wait(record.id)
        assert ended is not None and ended.status == JobStatus.COMPLETED, ended
    await service.cleanups.wait_all(timeout=60)
    await asyncio.sleep(1.2)  # the last job's record saved, the heap trim after its follower run


def _heap() -> tuple[int, int]:
    gc.collect()
    return sum(s.size for s in tracemalloc.take_snapshot().statistics("filename")), len(gc.get_objects())


@pytest.mark.root
def test_finished_jobs_each_cost_the_agent_a_bounded_few_hundred_bytes() -> None:
    """Real jobs through the agent's JobService and launcher, in this process: what the agent keeps
    once they have ended, per job, in bytes of Python heap and in objects."""
    n = 60
    root, paths, launcher, service = _in_process_service()
    try:
        run_coroutine(_jobs(service, 10))  # first uses: thread pools, caches, spare folders
        tracemalloc.start()
        try:
            size0, objects0 = _heap()
            run_coroutine(_jobs(service, n))
            size1, objects1 = _heap()
        finally:
            tracemalloc.stop()
        assert len(service.store.visible_to(ALICE)) == 10 + n and not service.live
        per_job = ((size1 - size0) / n, (objects1 - objects0) / n)
        assert per_job[0] <= BYTES_PER_JOB and per_job[1] <= OBJECTS_PER_JOB, f"bytes, objects per job: {per_job}"
    finally:
        launcher.stop()
        sweep_cgroups(paths.cgroup_parent())
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.root
def test_a_kept_job_answers_every_call_as_before_also_after_a_restart() -> None:
    """Over HTTP: the record (every field API.md names, the same as the exit event carried), the
    listing, the events from the start and after a seq, the /work files, then a DELETE."""
    with running_agent() as own:
        api = own.api()
        job_id = api.submit(command=["sh", "-c", "echo one; echo two >&2; echo kept > /work/k.txt; exit 3"])
        events = api.events(job_id)
        ended = events[-1]["record"]
        api.settle(job_id)
        time.sleep(1.5)  # saved, shelved
        for attempt in ("before", "after a restart"):
            record = api.record(job_id)
            assert record == ended, attempt
            assert {"id", "type", "owner", "status", "exit_code", "signal", "reason", "runtime", "limits", "network",
                    "created_at", "started_at", "ended_at", "usage"} <= set(record)
            assert (record["status"], record["exit_code"], record["reason"]) == ("FAILED", 3, "exit")
            assert [r for r in api.call("GET", "/v1/jobs").json() if r["id"] == job_id] == [ended], attempt
            assert api.events(job_id) == events and api.events(job_id, after=2) == events[2:], attempt
            assert api.events(job_id, follow=False) == events
            assert api.call("GET", f"/v1/jobs/{job_id}/files/k.txt").content == b"kept\n"
            if attempt == "before":
                own.stop()
                own.start()
                api = own.api()
        assert api.call("DELETE", f"/v1/jobs/{job_id}").status_code == 204
        assert api.call("GET", f"/v1/jobs/{job_id}").status_code == 404
        assert job_id not in [r["id"] for r in api.call("GET", "/v1/jobs").json()]

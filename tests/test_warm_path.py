"""What a warm session cell's path leaves out: the record store's deferred save and the request
guard's body budget without a lock or a timer task when the body fits."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from waiting import run_coroutine

from joblet_agent.api.guard import BodyBudget
from joblet_agent.errors import Unavailable
from joblet_agent.jobs import store as store_module
from joblet_agent.sessions.models import SessionRecord
from joblet_agent.sessions.store import SessionStore


def _on_disk(root: Path, record: SessionRecord) -> dict:
    return json.loads((root / record.id / "record.json").read_text())


def _record() -> SessionRecord:
    now = time.time()
    return SessionRecord(id="00112233aabbccdd", owner="alice", idle_timeout_s=60, created_at=now, last_active_at=now)


def test_save_soon_writes_the_newest_record_once_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "SAVE_SOON_S", 0.05)
    records = SessionStore(tmp_path)
    record = _record()

    async def cells() -> None:
        records.add(record)
        for _ in range(3):
            record.cells += 1
            records.save_soon(record)
        assert _on_disk(tmp_path, record)["cells"] == 0  # not on the cell's path
        await asyncio.sleep(0.3)

    run_coroutine(cells())
    assert _on_disk(tmp_path, record)["cells"] == 3


def test_save_pending_and_a_full_save_write_at_once_and_forget_drops_a_pending_save(tmp_path: Path) -> None:
    records = SessionStore(tmp_path)
    record, other = _record(), _record().model_copy(update={"id": "ffeeddccbbaa9988"})

    async def steps() -> None:
        records.add(record)
        records.add(other)
        record.cells = 2
        records.save_soon(record)
        records.save_pending()
        assert _on_disk(tmp_path, record)["cells"] == 2
        record.cells = 3
        records.save_soon(record)
        records.save(record)  # a full save takes the pending one along
        assert _on_disk(tmp_path, record)["cells"] == 3 and not records._unsaved
        other.cells = 5
        records.save_soon(other)
        records.forget(other.id)
        records.save_pending()
        assert _on_disk(tmp_path, other)["cells"] == 0

    run_coroutine(steps())


def test_a_body_that_fits_takes_the_budget_at_once_and_others_wait_their_turn() -> None:
    budget = BodyBudget(100)

    async def steps() -> None:
        await budget.take(60, 1.0)
        assert budget._freed is None  # no lock made while everything fits
        waiter = asyncio.create_task(budget.take(60, 5.0))
        await asyncio.sleep(0.01)
        assert not waiter.done() and budget.waiting == 1
        await budget.take(10, 5.0)  # one that fits still goes (through the waiters' lock)
        assert budget.used == 70 and not waiter.done()
        await budget.give(60)
        await waiter
        assert budget.used == 70 and budget.waiting == 0
        with pytest.raises(Unavailable, match="busy reading"):
            await budget.take(50, 0.05)
        assert budget.used == 70 and budget.waiting == 0
        await budget.give(70)
        await budget.take(100, 0.05)
        assert budget.used == 100

    run_coroutine(steps())


def test_a_jobs_end_logs_its_exit_before_its_record_is_replaced_on_disk(tmp_path: Path) -> None:
    """JobStore.finish: the exit event first (a follower woken by it runs before the record's file
    is replaced), the record in memory at once; on disk a turn of the loop later, never for a job
    deleted meanwhile (its folder is gone)."""
    from joblet_agent.contract import JobStatus
    from joblet_agent.jobs.jobstore import JobStore
    from joblet_agent.jobs.verdict import Verdict
    from joblet_agent.models import JobLimits, JobRecord

    jobs = JobStore(tmp_path)
    kept, deleted = (JobRecord(id=job_id, owner="alice", limits=JobLimits(), network="none", command=["true"],
                               created_at=time.time()) for job_id in ("00112233aabbccdd", "ffeeddccbbaa9988"))
    seen: list[str] = []

    async def follow(job_id: str) -> None:
        async for event in jobs.log(job_id).follow():
            if event["type"] == "exit":
                seen.append(_on_disk(tmp_path, kept)["status"])

    async def steps() -> None:
        for record in (kept, deleted):
            jobs.add(record)
        follower = asyncio.create_task(follow(kept.id))
        await asyncio.sleep(0.01)
        for record in (kept, deleted):
            jobs.finish(record, Verdict(JobStatus.COMPLETED, "exit", exit_code=0))
        assert kept.status == JobStatus.COMPLETED and _on_disk(tmp_path, kept)["status"] == "PENDING"
        jobs.remove(deleted.id)
        await follower
        await asyncio.sleep(0.01)

    run_coroutine(steps())
    assert seen == ["PENDING"]  # the follower had the exit before the record was replaced
    assert _on_disk(tmp_path, kept)["status"] == "COMPLETED"
    assert not (tmp_path / deleted.id).exists()


async def _until(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    """Wait with the loop running (spares are made after a timer on it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout}s: {predicate}"
        await asyncio.sleep(0.01)


def _job(job_id: str) -> Any:
    from joblet_agent.models import JobLimits, JobRecord

    return JobRecord(id=job_id, owner="alice", limits=JobLimits(), network="none", command=["true"],
                     created_at=time.time())


def test_a_job_folder_is_a_spare_made_ahead_off_the_event_loop(tmp_path: Path) -> None:
    """The first job makes its folder itself and has spares made in a worker thread; the next
    takes one (renamed: record written into its file, the log's and the launch note's files there,
    empty); a new start clears what an earlier life left."""
    from joblet_agent.jobs.spare import SPARE_FILES, SpareFolders
    from joblet_agent.jobs.jobstore import JobStore

    spares = SpareFolders(tmp_path / "spare", keep=3)
    spares.clear()
    jobs = JobStore(tmp_path / "jobs", spares)
    (tmp_path / "jobs").mkdir()
    first, second = _job("00112233aabbccdd"), _job("ffeeddccbbaa9988")

    async def steps() -> None:
        jobs.add(first)
        assert sorted(p.name for p in (tmp_path / "jobs" / first.id).iterdir()) == ["record.json"]
        await _until(lambda: len(spares.ready) == spares.keep and not spares._making)  # the worker made them
        made = list(spares.ready)
        assert all(sorted(p.name for p in folder.iterdir()) == sorted(SPARE_FILES) for folder in made)
        assert all((folder / name).stat().st_size == 0 for folder in made for name in SPARE_FILES)
        jobs.add(second)
        assert not (made[-1]).exists()
        folder = tmp_path / "jobs" / second.id
        assert sorted(p.name for p in folder.iterdir()) == sorted(SPARE_FILES)
        assert _on_disk(tmp_path / "jobs", second)["id"] == second.id  # type: ignore[arg-type]
        assert (folder / "events.ndjson").stat().st_size == 0 and jobs.log(second.id).seq == 0
        await _until(lambda: len(spares.ready) == spares.keep and not spares._making)

    run_coroutine(steps())
    assert len(list((tmp_path / "spare").iterdir())) == spares.keep
    SpareFolders(tmp_path / "spare").clear()
    assert not list((tmp_path / "spare").iterdir())


def test_a_burst_finds_its_folders_made_and_none_are_made_during_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Spares enough for a burst (64 by default; 8 here), all taken by a burst of 8 jobs; while
    jobs keep coming no worker makes more (it would compete with the burst for the cores), and
    once they pause the spares are made again, up to the number kept."""
    from joblet_agent.jobs import spare as spare_module
    from joblet_agent.jobs.spare import SpareFolders
    from joblet_agent.jobs.jobstore import JobStore

    assert spare_module.KEEP >= 64
    monkeypatch.setattr(spare_module, "QUIET_S", 0.3)
    spares = SpareFolders(tmp_path / "spare", keep=8)
    spares.clear()
    jobs = JobStore(tmp_path / "jobs", spares)
    (tmp_path / "jobs").mkdir()
    took: list[bool] = []
    real_take = spares.take
    spares.take = lambda dest: took.append(real_take(dest)) or took[-1]  # type: ignore[method-assign]

    async def steps() -> None:
        jobs.add(_job("0000000000000000"))
        await _until(lambda: len(spares.ready) == 8 and not spares._making)
        made = set(spares.ready)
        took.clear()
        for i in range(1, 11):  # a burst: one job each 10 ms, 10 jobs for 8 spares
            jobs.add(_job(f"{i:016x}"))
            assert not spares._making, "a spare was being made during the burst"
            await asyncio.sleep(0.01)
        assert took == [True] * 8 + [False] * 2 and not spares.ready and not any(p.exists() for p in made)
        assert not spares._making
        await _until(lambda: len(spares.ready) == 8 and not spares._making)  # after the pause

    run_coroutine(steps())
    assert len(list((tmp_path / "spare").iterdir())) == 8
    assert len(list((tmp_path / "jobs").iterdir())) == 11


@pytest.mark.root
def test_an_agent_makes_its_spare_folders_at_start_before_any_job() -> None:
    """A (re)started agent's first burst finds its folders made: the spares are made once its start
    is quiet, not only after a first job took one."""
    from agentproc import running_agent
    from waiting import wait_until

    from joblet_agent.jobs.spare import KEEP

    with running_agent() as agent:
        spare = agent.root / "state" / "spare"
        wait_until(lambda: len(list(spare.iterdir())) == KEEP, timeout=60,
                   message=lambda: f"{len(list(spare.iterdir()))} spare folders of {KEEP}")


def test_closed_spares_make_no_more_even_with_a_worker_under_way(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A service that stops (the agent's shutdown, a test's teardown) closes its spares: the worker
    making them is waited for and stops before its next folder, and no take or timer starts
    another, so nothing appears in a root its owner goes on to remove."""
    from joblet_agent.jobs import spare as spare_module
    from joblet_agent.jobs.spare import SpareFolders

    monkeypatch.setattr(spare_module, "QUIET_S", 0.0)
    spares = SpareFolders(tmp_path / "spare", keep=100000)
    spares.clear()
    real_make_one = spares._make_one
    spares._make_one = lambda: (time.sleep(0.002), real_make_one())  # type: ignore[method-assign]

    async def steps() -> None:
        spares.prime()
        await _until(lambda: len(spares.ready) >= 5)  # the worker is under way, far from its keep
        await spares.close()
        made = len(list((tmp_path / "spare").iterdir()))
        assert made < 100000 and spares._worker is None
        spares.prime()
        spares.take(tmp_path / "taken")  # a take after close (it may take a ready one): no new worker
        await asyncio.sleep(0.2)
        assert spares._pending is None and not spares._making
        assert len(list((tmp_path / "spare").iterdir())) <= made

    run_coroutine(steps())

"""A holder names its cgroup after its job only once the job's init is spawned (holder.py); until
then the cgroup has its stage's name, which no reader of `job-<id>` looks for. The launcher's watch
(sandbox/stagewatch.py) removes the cgroup of a stage that ends under its stage name, and lets go of
one renamed after its job. Real cgroups, real processes, no timing claims."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from test_launcher_lend import WHO, Agent, _comm
from waiting import wait_until

from joblet_agent.sandbox import cgroups, sequence
from joblet_agent.sandbox.cgroups import CgroupLimits
from joblet_agent.sandbox.holder import HOLDER_NAME
from joblet_agent.sandbox.launcher import IDLE_STAGE_NAME
from joblet_agent.sandbox.stagewatch import StageWatch

pytestmark = pytest.mark.root

PARENT = f"jnb-test-watch-{os.getpid()}"


def _in_cgroup(cgroup: cgroups.JobCgroup) -> int:
    """A child process in `cgroup`, sleeping until killed."""
    pid = os.fork()
    if pid == 0:
        try:
            cgroup.join(os.getpid())
            time.sleep(60)
        finally:
            os._exit(0)
    wait_until(lambda: pid in cgroup.pids(), 10, 0.01)
    return pid


def _exists(cgroup: cgroups.JobCgroup) -> bool:
    return any(os.path.isdir(d) for d in cgroup.dirs)


@pytest.fixture
def driver() -> Any:
    found = cgroups.detect(PARENT)
    yield found
    for name in found.leftovers():
        found.open(name).remove()
    found.remove_parent()


def _wait_ended(watch: StageWatch, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    wait_until(lambda: watch.pidfds() and __import__("select").select(watch.pidfds(), [], [], 0)[0], 10, 0.01)
    watch.ended(__import__("select").select(watch.pidfds(), [], [], 0)[0], wait=True)


def test_a_stage_that_ends_under_its_stage_name_leaves_no_cgroup(driver: Any) -> None:
    name = sequence.stage_cgroup_name()
    stage = driver.create(name, CgroupLimits())
    pid = _in_cgroup(stage)
    watch = StageWatch(driver)
    watch.forked(pid, name)
    watch.taken(name)
    watch.prune()
    assert watch.pidfds(), "a stage still under its stage name is watched"
    _wait_ended(watch, pid)
    assert not _exists(stage)
    assert not watch.pidfds()


def test_a_stage_renamed_after_its_job_is_let_go_and_its_cgroup_kept(driver: Any) -> None:
    """The agent removes `job-<id>` after the job's end: the launcher never touches it."""
    name = sequence.stage_cgroup_name()
    stage = driver.create(name, CgroupLimits())
    pid = _in_cgroup(stage)
    watch = StageWatch(driver)
    watch.forked(pid, name)
    watch.prune()
    assert watch.pidfds(), "a waiting stage is never let go"
    job = stage.rename("job-watched")
    watch.prune()
    assert watch.pidfds(), "one without its job is not let go, whatever its cgroup"
    watch.taken(name)
    watch.prune()
    assert not watch.pidfds()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert _exists(job)


def test_a_waiting_stage_that_dies_leaves_no_cgroup(driver: Any) -> None:
    name = sequence.stage_cgroup_name()
    stage = driver.create(name, CgroupLimits())
    pid = _in_cgroup(stage)
    watch = StageWatch(driver)
    watch.forked(pid, name)
    _wait_ended(watch, pid)
    assert not _exists(stage)


def _stage_cgroup(pid: int, parent: str) -> str | None:
    """The name of the cgroup under `parent` that process `pid` is in."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)[-1].split("/")
        if parent in parts and parts.index(parent) + 1 < len(parts):
            return parts[parts.index(parent) + 1]
    return None


def test_holders_killed_at_random_points_of_their_set_up_leave_no_cgroup() -> None:
    """Holders SIGKILLed at random moments from the job's hand-over on (several before their
    cgroup has the job's name, which the test checks it hit): once every job has ended, the
    cgroups under the agent's parent are exactly those of the stages still waiting."""
    from joblet_agent.models import JobRequest

    rng = random.Random()
    with Agent() as agent:
        parent = agent.paths.cgroup_parent()
        launcher_pid = agent.launcher.pid
        assert launcher_pid is not None

        def holders() -> list[int]:
            kids = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
            return [int(p) for p in kids if _comm(int(p)) == HOLDER_NAME]

        async def one() -> str | None:
            record = await agent.service.start(WHO, JobRequest(command=["sleep", "30"]))
            found: list[int] = []
            while not found:
                found = holders()
                await asyncio.sleep(0)
            time.sleep(rng.uniform(0, 0.006))
            named = [_stage_cgroup(pid, parent) for pid in found]
            for pid in found:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # one of an earlier job, gone meanwhile
                    pass
            await asyncio.wait_for(agent.service.wait(record.id), 30)
            return next((n for n in named if n and n.startswith("stage-")), None)

        hits = [agent.loop.run_until_complete(one()) for _ in range(24)]
        assert any(hits), "no holder was killed before its cgroup was named: the test proved nothing"
        agent.loop.run_until_complete(agent.service.cleanups.wait_all(timeout=60))

        def waiting_stages_only() -> bool:
            driver = cgroups.detect(parent)
            kids = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
            waiting = {_stage_cgroup(int(p), parent) for p in kids if _comm(int(p)) == IDLE_STAGE_NAME}
            return set(driver.leftovers()) == waiting

        wait_until(waiting_stages_only, 30, 0.05,
                   lambda: f"left: {cgroups.detect(parent).leftovers()}, hit: {[h for h in hits if h]}")

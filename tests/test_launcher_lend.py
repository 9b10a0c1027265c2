"""The stage the launcher lends the agent (launcher.StagePool.lend): the agent's next job goes
straight to it, not through the launcher; a lent stage is the agent's alone, one that died is
passed over, and jobs that come while the agent holds none still go through the launcher. No
timing claims (benchmarks/handover.py measures the hand-over)."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest

from agentproc import sweep_cgroups
from waiting import wait_until

from joblet_agent.auth import Principal
from joblet_agent.contract import JobStatus
from joblet_agent.sandbox.launcher import IDLE_STAGE_NAME, POOL_SIZE

pytestmark = pytest.mark.root

WHO = Principal(id="alice", name="alice", role="user")


class Agent:
    """The agent's JobService and launcher in this process, on a temporary root."""

    def __enter__(self) -> "Agent":
        from joblet_agent.cluster.launcher_client import Launcher
        from joblet_agent.config import AgentConfig
        from joblet_agent.jobs.service import JobService
        from joblet_agent.paths import AgentPaths
        from joblet_agent.sandbox import cgroups

        self.root = Path(tempfile.mkdtemp(prefix="jnb-test-lend-"))
        self.paths = AgentPaths.at(self.root)
        self.paths.ensure()
        self.launcher = Launcher(self.paths.cgroup_parent())
        self.launcher.start()
        self.service = JobService(self.paths, AgentConfig(), cgroups.detect(self.paths.cgroup_parent()),
                                  self.launcher)
        self.loop = asyncio.new_event_loop()  # one for all: a job's clean-up task outlives its call
        return self

    def __exit__(self, *exc: Any) -> None:
        with_launcher = self.launcher.pid
        if with_launcher:
            os.kill(with_launcher, signal.SIGCONT)
        try:
            self.loop.run_until_complete(self.service.cleanups.wait_all(timeout=60))
        finally:
            self.loop.run_until_complete(self.service.store.spares.close())  # none made after the rmtree
            self.loop.close()
            self.launcher.stop()
        sweep_cgroups(self.paths.cgroup_parent())
        shutil.rmtree(self.root, ignore_errors=True)

    def run(self, jobs: int = 1) -> list[Any]:
        """`jobs` jobs of `true` at once; their ended records."""
        from joblet_agent.models import JobRequest

        async def one() -> Any:
            record = await self.service.start(WHO, JobRequest(command=["true"]))
            return await asyncio.wait_for(self.service.wait(record.id), 30)

        async def all_of() -> list[Any]:
            return await asyncio.gather(*(one() for _ in range(jobs)))

        return self.loop.run_until_complete(all_of())

    def stages(self) -> list[int]:
        """The launcher's waiting stages."""
        assert self.launcher.pid is not None
        kids = Path(f"/proc/{self.launcher.pid}/task/{self.launcher.pid}/children").read_text().split()
        return [int(pid) for pid in kids if _comm(int(pid)) == IDLE_STAGE_NAME]

    def lent_one(self) -> bool:
        """The launcher has lent a stage, and the message waits on the agent's socket."""
        sock = self.launcher._sock
        return sock is not None and bool(select.select([sock], [], [], 0)[0])


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _completed(records: list[Any]) -> bool:
    return all(r is not None and (r.status, r.exit_code) == (JobStatus.COMPLETED, 0) for r in records)


def test_a_job_reaches_the_lent_stage_while_the_launcher_is_stopped() -> None:
    """With the launcher stopped (SIGSTOP), the job still starts and ends: it went to the stage
    the launcher lent before, not through the launcher."""
    with Agent() as agent:
        assert _completed(agent.run())  # first uses
        wait_until(agent.lent_one, 30, 0.01)
        assert agent.launcher.pid is not None
        os.kill(agent.launcher.pid, signal.SIGSTOP)
        try:
            assert _completed(agent.run())
        finally:
            os.kill(agent.launcher.pid, signal.SIGCONT)
        assert _completed(agent.run())  # the launcher lends the next, or takes it itself


def test_a_lent_stage_that_died_is_passed_over_and_every_job_of_a_burst_gets_a_stage_of_its_own() -> None:
    """Every waiting stage killed (the lent one too): the next job goes through the launcher. Then
    bursts, one job straight to the lent stage and the others through the launcher, each to a stage
    of its own (a stage given two jobs would fail one: no hello), and nothing is left over."""
    with Agent() as agent:
        assert _completed(agent.run())
        wait_until(lambda: len(agent.stages()) == POOL_SIZE and agent.lent_one(), 30, 0.01)
        dead = agent.stages()
        for pid in dead:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in dead), 30, 0.01)
        assert _completed(agent.run())
        for _ in range(3):
            wait_until(agent.lent_one, 30, 0.01)
            assert _completed(agent.run(2 * POOL_SIZE + 1))
        wait_until(lambda: len(agent.stages()) == POOL_SIZE, 30, 0.05)
        assert len(agent.launcher._lent) <= 1  # the agent holds at most the stage it was lent last

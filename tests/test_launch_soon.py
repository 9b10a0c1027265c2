"""A job's POST is answered before its sandbox is handed over (JobService.start, cluster/local.py
`soon`): `start` returns with the hand-over still to come in the same event-loop turn's end, and
the job runs as before; a stop asked in between is kept for the holder and stops the job. A real
launcher and real sandboxes (the in-process agent of test_launcher_lend.py)."""

from __future__ import annotations

import asyncio

import pytest

from joblet_agent.contract import JobStatus
from joblet_agent.models import JobRequest
from test_launcher_lend import WHO, Agent

pytestmark = pytest.mark.root


def test_start_returns_before_the_hand_over_which_follows_at_the_turns_end() -> None:
    with Agent() as agent:
        async def main() -> object:
            record = await agent.service.start(WHO, JobRequest(command=["true"]))
            execution = agent.service.live[record.id].execution
            assert execution is not None and execution.link is None  # not handed over yet
            await asyncio.sleep(0)
            assert execution.link is not None  # handed over once the turn ended
            return await asyncio.wait_for(agent.service.wait(record.id), 30)

        record = agent.loop.run_until_complete(main())
        assert record is not None and (record.status, record.exit_code) == (JobStatus.COMPLETED, 0)


def test_a_stop_asked_before_the_hand_over_stops_the_job() -> None:
    with Agent() as agent:
        async def main() -> object:
            record = await agent.service.start(WHO, JobRequest(command=["sleep", "60"]))
            await agent.service.stop(WHO, record.id)  # before the hand-over
            return await asyncio.wait_for(agent.service.wait(record.id), 60)

        record = agent.loop.run_until_complete(main())
        assert record is not None and record.status == JobStatus.STOPPED, record

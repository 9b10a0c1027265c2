"""The warm launcher's pool of waiting stages when jobs take them faster than a quiet moment comes:
the job that takes the last waiting stage has the next one forked at once, so the job after it
does not fork its own stage and wait while it is prepared; between jobs one at a time, the pool
is still topped up only after a quiet moment."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from joblet_agent.sandbox import launcher


class CountingPool(launcher.StagePool):
    """A pool whose stages are socket pairs, not forks (what is counted is when a stage is made,
    not what it does): `inline` counts the jobs that found no waiting stage and made their own."""

    def __init__(self, agent_fd: int = -1, size: int = 2) -> None:
        super().__init__(agent_fd, size)
        self.stage_ends: list[socket.socket] = []
        self.spawned = 0
        self.inline = 0
        self._dispatching = False

    def _spawn(self) -> socket.socket:
        self.spawned += 1
        self.inline += self._dispatching
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.stage_ends.append(theirs)
        return ours

    def dispatch(self, fds: list[int], kind: bytes = b"job") -> None:
        self._dispatching = True
        try:
            super().dispatch(fds, kind)
        finally:
            self._dispatching = False

    def _top_up(self) -> None:
        self._dispatching = False  # the job has its stage: what is forked now is for the next one
        super()._top_up()

    def received(self) -> list[bytes]:
        """What each stage was handed (a stage still waiting was handed nothing)."""
        got = []
        for end in self.stage_ends:
            end.setblocking(False)
            try:
                msg, fds, _flags, _addr = socket.recv_fds(end, 16, launcher.MAX_FDS)
            except BlockingIOError:
                continue
            got.append(msg)
            for fd in fds:
                os.close(fd)
        return got

    def close(self) -> None:
        for end in self.stage_ends + self.idle + self.lent_out:
            end.close()


def _job(pool: CountingPool) -> None:
    r, w = os.pipe()
    try:
        pool.dispatch([r], launcher.HOLD)
    finally:
        os.close(r)
        os.close(w)


def test_a_burst_through_the_launcher_never_waits_for_a_stage_forked_for_it() -> None:
    pool = CountingPool()
    pool.fill()
    try:
        for _ in range(6):  # one after another, with no quiet moment between them
            _job(pool)
        assert pool.received() == [launcher.HOLD] * 6  # every job reached a stage, in one piece
        assert pool.inline == 0, f"{pool.inline} of 6 jobs forked their own stage"
        assert len(pool.idle) == 1  # forked when the last job took the last stage
    finally:
        pool.close()


@contextlib.contextmanager
def _lending_pool() -> Iterator[CountingPool]:
    """A full pool that has lent one stage to an agent's socket."""
    agent, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pool = CountingPool(ours.fileno())
    try:
        pool.fill()
        pool.lend()
        assert (len(pool.idle), len(pool.lent_out)) == (1, 1)
        yield pool
    finally:
        pool.close()
        agent.close()
        ours.close()


def test_the_lent_stage_taken_with_no_other_waiting_forks_the_next_at_once() -> None:
    with _lending_pool() as pool:
        _job(pool)  # a job through the launcher takes the other stage: the lent one still waits
        assert (pool.spawned, len(pool.idle)) == (2, 0)
        pool.returned()  # the agent's next job took the lent stage: none is left
        assert (pool.spawned, len(pool.idle)) == (3, 1)


def test_one_job_at_a_time_leaves_the_refill_to_a_quiet_moment() -> None:
    with _lending_pool() as pool:
        pool.returned()  # the job went to the lent stage; another still waits, to be lent next
        assert (pool.spawned, len(pool.idle), pool.full) == (2, 1, False)

"""The notebook side reuses its HTTP sessions: a client per agent and token is kept by the magics,
and the clients a cell's threads use (event pump, status line) take idle sessions of that client's
pool and give them back, so consecutive cells need no new connection."""

from __future__ import annotations

import pytest

from joblet_nb.core import pool
from joblet_nb.core.client import JobletClient


def test_a_released_clone_gives_its_session_to_the_next():
    client = JobletClient("http://127.0.0.1:9", "t")
    first = client.clone()
    session = first.session
    first.release()
    first.release()  # once only: a session is never handed to two clients
    assert client.clone().session is session
    assert client.clone().session is not session


def test_the_pool_keeps_a_few_idle_sessions_and_closes_the_rest():
    client = JobletClient("http://127.0.0.1:9", "t")
    clones = [client.clone() for _ in range(pool.KEEP_IDLE + 2)]
    for clone in clones:
        clone.release()
    kept = {id(client.clone().session) for _ in range(pool.KEEP_IDLE + 2)}
    assert len(kept & {id(c.session) for c in clones}) == pool.KEEP_IDLE


def test_another_token_shares_the_pool_of_the_same_agent():
    client = JobletClient("http://127.0.0.1:9", "t")
    clone = client.clone()
    session = clone.session
    clone.release()
    assert client.with_token("admin").session is session


@pytest.mark.root
def test_consecutive_cells_open_no_new_sessions(nb, monkeypatch):
    made = []
    real = pool.session_for

    def counting(url):
        made.append(url)
        return real(url)

    monkeypatch.setattr(pool, "session_for", counting)
    for i in range(3):
        cell = nb.run(f"%%joblet run\nprint('cell {i}')")
        assert cell.error is None and cell.stdout == f"cell {i}\n", cell
    assert len(made) <= 2, made  # the magics' client and one event pump, made by the first cell

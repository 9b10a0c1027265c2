"""Shared fixtures: one real agent (uvicorn on loopback, real sandboxes) for the session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agentproc import AgentProcess, Api, running_agent  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the joblet-nb suite runs as root: it starts real sandboxes (CI runs as root)")


@pytest.fixture(scope="session")
def agent() -> Iterator[AgentProcess]:
    """A real agent; at the end, the suite fails if it left any mount, cgroup or job folder."""
    with running_agent() as proc:
        yield proc


@pytest.fixture
def api(agent: AgentProcess) -> Api:
    return agent.api()


@pytest.fixture
def admin_api(agent: AgentProcess) -> Api:
    return agent.api(agent.admin_token)

"""One real JupyterHub and one joblet agent registered with it as the service `joblet`, shared by
the hub tests: two students and a teacher (in the agent's admin group), logged in through the hub."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentproc import AgentProcess, leftovers
from hubproc import AGENT_CONFIG, CACHE_S, GROUPS, TIMEOUT_S, HubProcess, HubSetup


@pytest.fixture(scope="session")
def hubsetup() -> Iterator[HubSetup]:
    agent = AgentProcess.fresh()
    hub = HubProcess(agent_url=agent.url, groups=GROUPS)
    (agent.root / "config").mkdir(parents=True, exist_ok=True)
    (agent.root / "config" / "agent.yml").write_text(
        AGENT_CONFIG.format(api_url=hub.api_url, cache_s=CACHE_S, timeout_s=TIMEOUT_S))
    setup = HubSetup(agent, hub)
    try:
        agent.start(extra_env={"JUPYTERHUB_API_TOKEN": hub.service_token})
        hub.start()
        for name in ("s1", "s2", "t1"):
            setup.users[name] = hub.login(name)
            setup.tokens[name] = setup.users[name].new_token()["token"]
        yield setup
    finally:
        hub.remove()
        agent.stop()
        left = leftovers(agent.root)
        agent.remove()
        assert not left, f"the agent left things behind: {left}"


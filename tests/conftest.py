"""Every shared fixture of the suite, and the `root` mark.

A test that starts real sandboxes (an agent, a cgroup, a namespace...) carries `@pytest.mark.root`
(or its module a `pytestmark`); without root it is skipped with that reason, so the unit tests run
on a laptop while CI, as root, runs everything. A test that uses an agent fixture without the mark
stops the run at collection, as root too, so a missing mark is caught where the suite is green.

Every test talks to real agents (`agentproc.running_agent`); nothing of the agent is mocked. The
notebook tests' IPython shell is configured through `%config` (URL and token files), so they never
depend on the environment or on a `~/.config/joblet` of the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

from agentproc import NEEDS_ROOT, AgentProcess, Api, running_agent
from hubproc import AGENT_CONFIG, CACHE_S, GROUPS, TIMEOUT_S, HubProcess, HubSetup
from joblet_nb.core.client import JobletClient
from nbshell import NbShell

AGENT_FIXTURES = {"agent", "module_agent", "hubsetup"}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip(NEEDS_ROOT)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items if item.get_closest_marker("root") is None
                and AGENT_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if unmarked:
        raise pytest.UsageError("tests that use a real agent need @pytest.mark.root: " + ", ".join(unmarked))


# ---- agents ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def agent() -> Iterator[AgentProcess]:
    """The session's real agent; at the end, the suite fails if it left any mount, cgroup or job folder."""
    with running_agent() as proc:
        yield proc


@pytest.fixture(scope="module")
def module_agent() -> Iterator[AgentProcess]:
    """An agent of the test module's own: its builds, tampering, removals and fuzzing touch nobody
    else's runtimes or jobs."""
    with running_agent() as proc:
        yield proc


@pytest.fixture
def api(agent: AgentProcess) -> Api:
    return agent.api()


@pytest.fixture
def admin_api(agent: AgentProcess) -> Api:
    return agent.api(agent.admin_token)


@pytest.fixture(scope="session")
def hubsetup() -> Iterator[HubSetup]:
    """A real JupyterHub and an agent registered with it as the service `joblet`; two students
    and a teacher (in the agent's admin group) logged in through the hub, each with a token."""
    hub = HubProcess(groups=GROUPS)
    config = AGENT_CONFIG.format(api_url=hub.api_url, cache_s=CACHE_S, timeout_s=TIMEOUT_S)
    try:
        with running_agent(config, env={"JUPYTERHUB_API_TOKEN": hub.service_token}) as agent:
            hub.agent_url = agent.url
            hub.start()
            setup = HubSetup(agent, hub)
            for name in ("s1", "s2", "t1"):
                setup.users[name] = hub.login(name)
                setup.tokens[name] = setup.users[name].new_token()["token"]
            yield setup
            hub.stop()  # with its servers and their kernels, before the agent's leftover check
    finally:
        hub.remove()


# ---- the notebook side -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def nb_shell(agent: AgentProcess, tmp_path_factory: pytest.TempPathFactory) -> NbShell:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "joblet_nb")
    token_dir = tmp_path_factory.mktemp("jnb-tokens")
    nb = NbShell(shell, agent, token_dir)
    nb.user_token_file.write_text(agent.user_token + "\n")
    nb.admin_token_file.write_text(agent.admin_token + "\n")
    os.chmod(nb.user_token_file, 0o600)
    os.chmod(nb.admin_token_file, 0o600)
    nb.configure()
    return nb


@pytest.fixture
def nb(nb_shell: NbShell) -> Iterator[NbShell]:
    """The session's shell with its session defaults reset, before and after the test."""
    nb_shell.reset()
    yield nb_shell
    nb_shell.reset()


@pytest.fixture
def client(agent: AgentProcess) -> JobletClient:
    return JobletClient(agent.url, agent.user_token, agent.admin_token)

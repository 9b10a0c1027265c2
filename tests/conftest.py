"""Every shared fixture of the suite, and the `root` mark.

A test that starts real sandboxes (an agent, a cgroup, a namespace...) carries `@pytest.mark.root`
(or its module a `pytestmark`); without root it is skipped with that reason, so the unit tests run
on a laptop while CI, as root, runs everything. A test that uses an agent fixture without the mark
stops the run at collection, as root too, so a missing mark is caught where the suite is green.

Every test talks to real agents (`agentproc.running_agent`); nothing of the agent is mocked. The
notebook tests' IPython shell is configured through `%config` (URL and token files), so they never
depend on the environment or on a `~/.config/joblet` of the machine.

Other suites may run on the same host at once, and a run may be killed: SIGTERM and SIGHUP end a
run like Ctrl-C (its fixtures and `finally` blocks still remove what they made), and a run starts
by removing what runs that are gone left behind (`testrun.sweep`, listed in the header).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from agentproc import NEEDS_ROOT, AgentProcess, Api, running_agent
from browser.jupyter import APPS, JupyterServer
from browser.page import NotebookPage, new_notebook_json
from hubproc import AGENT_CONFIG, CACHE_S, GROUPS, TIMEOUT_S, HubProcess, HubSetup
from joblet_nb.core.client import JobletClient
from nbshell import NbShell
from slurmcluster import SlurmCluster, node_leftovers, one_node_cluster, slurm_config
import testrun

AGENT_FIXTURES = {"agent", "module_agent", "hubsetup", "slurm_cluster", "slurm_agent"}
_swept: list[str] = []


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    _swept.extend(testrun.sweep())


def pytest_unconfigure(config: pytest.Config) -> None:
    testrun.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"jnb-test run {testrun.RUN_ID}"]
    if _swept:
        lines.append("removed what runs that are gone left behind: " + ", ".join(_swept))
    return lines


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


@pytest.fixture(scope="session")
def ml_runtime(agent: AgentProcess) -> str:
    """`python-3.11-ml` (numpy, pandas, matplotlib) on the session's agent, built once if it is
    missing; the tests that show a real table or plot from a sandbox share it. Skipped only where
    the agent says it has no bridge network to download the packages."""
    admin = agent.api(agent.admin_token)
    name = "python-3.11-ml"
    if admin.call("GET", f"/v1/runtimes/{name}").status_code == 404:
        r = admin.call("POST", f"/v1/runtimes/{name}/build", json={})
        if r.status_code == 409 and "no bridge network" in r.text:
            pytest.skip(f"the agent has no bridge network to download {name}: {r.text}")
        assert r.status_code == 201, r.text
        events = admin.events(r.json()["id"], timeout=1800)
        assert events[-1].get("status") == "COMPLETED", events[-5:]
    return name


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


# ---- a Slurm cluster, and an agent that places its jobs through it ---------------------------


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A one-node Slurm with two fake GPUs (tests/slurmcluster.py), torn down at the end."""
    if os.geteuid() != 0:
        pytest.skip(NEEDS_ROOT)
    with one_node_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def slurm_node_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The node side's folder (slurm.node_root) of the Slurm agents of the tests."""
    return tmp_path_factory.mktemp("jnb-node-root")


@pytest.fixture(scope="session")
def slurm_agent(slurm_cluster: SlurmCluster, slurm_node_root: Path) -> Iterator[AgentProcess]:
    """An agent with `executor: slurm`; once it has stopped, the node side has left nothing."""
    with running_agent(slurm_config(slurm_node_root), env=slurm_cluster.env) as agent:
        yield agent
    assert not node_leftovers(slurm_node_root)


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


@pytest.fixture
def kernel(agent: AgentProcess) -> Iterator[Any]:
    """A real python3 kernel (jupyter_client) with joblet_nb loaded and pointed at the suite's
    agent through its environment, as a hub or a user's shell would; its blocking client."""
    from jupyter_client.manager import start_new_kernel

    saved = dict(os.environ)
    os.environ.update(JOBLET_URL=agent.url, JOBLET_TOKEN=agent.user_token)
    try:
        km, kc = start_new_kernel(kernel_name="python3")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        kc.execute_interactive("%load_ext joblet_nb", timeout=60)
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


# ---- the browser (tests/browser: JupyterLab 4 and Notebook 7 in headless Chromium) ------------
#
#     pytestmark = [pytest.mark.root, pytest.mark.browser]
#
#     def test_x(open_notebook):        # runs once in each app
#         page = open_notebook("x.ipynb", ["%load_ext joblet_nb", "%%joblet run\nprint(1)"])
#         page.run_cell(0)
#         page.run_cell(1)
#         assert "1" in page.text(1)

CHROMIUM = "/usr/lib/chromium/chromium"  # Debian's real binary; /usr/bin/chromium is a shell wrapper
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(scope="session")
def jupyter_servers(agent: AgentProcess) -> Iterator[dict[str, JupyterServer]]:
    """One server per app, started when a test first needs it; stopped (kernels, folders) at the end."""
    servers: dict[str, JupyterServer] = {}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(params=APPS)
def jupyter(request: pytest.FixtureRequest, agent: AgentProcess,
            jupyter_servers: dict[str, JupyterServer]) -> Iterator[JupyterServer]:
    """The app of this test's parameter ("lab", "notebook"); its kernels talk to the suite's agent."""
    app = request.param
    if app not in jupyter_servers:
        env = {"JOBLET_URL": agent.url, "JOBLET_TOKEN": agent.user_token,
               "JOBLET_ADMIN_TOKEN": agent.admin_token}
        jupyter_servers[app] = JupyterServer(app, env).start()
    server = jupyter_servers[app]
    yield server
    server.shutdown_kernels()
    for item in server.root.iterdir():
        shutil.rmtree(item) if item.is_dir() else item.unlink()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for one test module. Module scope: Playwright's sync API keeps an asyncio
    loop running in this thread while it is open, which asyncio code of later tests would trip over."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def open_notebook(jupyter: JupyterServer, browser: Any) -> Iterator[Callable[..., NotebookPage]]:
    """`open_notebook(name, cells=None, transform=None)`: writes a notebook of code `cells` (or the
    example `notebooks/<name>` when `cells` is None, passed through `transform`) into the server's
    root and opens it in a page of its own; returns the `NotebookPage` once its kernel is idle."""
    contexts = []

    def open_(name: str, cells: list[str] | None = None, transform: Callable[[str], str] | None = None,
              width: int = 1280, height: int = 900) -> NotebookPage:
        text = new_notebook_json(cells) if cells is not None else (NOTEBOOKS / name).read_text()
        (jupyter.root / name).write_text(transform(text) if transform else text)
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        return NotebookPage(context.new_page(), jupyter.app).open(jupyter.notebook_url(name))

    yield open_
    for context in contexts:
        context.close()

"""Fixtures of the browser suite: the real agent of `tests/conftest.py`, one JupyterLab and one
Notebook 7 server for the session, headless Chromium (Debian's, driven by Playwright), and a
fresh page per test.

A test asks for `open_notebook` (parametrized over both apps through `jupyter`):

    def test_x(open_notebook):
        page = open_notebook("x.ipynb", ["%load_ext joblet_nb", "%%joblet run\\nprint(1)"])
        page.run_cell(0)
        page.run_cell(1)
        assert "1" in page.text(1)
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from .jupyter import APPS, JupyterServer
from .page import NotebookPage, new_notebook_json

CHROMIUM = "/usr/lib/chromium/chromium"  # the real binary; /usr/bin/chromium is a shell wrapper
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="package")
def jupyter_servers(agent: Any) -> Iterator[dict[str, JupyterServer]]:
    """Both apps, started lazily by `jupyter`, stopped (kernels, folders) at the session's end."""
    servers: dict[str, JupyterServer] = {}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(params=APPS)
def jupyter(request: pytest.FixtureRequest, agent: Any,
            jupyter_servers: dict[str, JupyterServer]) -> Iterator[JupyterServer]:
    """The app of this test's parameter; its kernels talk to the suite's agent."""
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


# Package scope: Playwright's sync API keeps an asyncio loop running in this thread while it is
# open, which asyncio code of later tests (pyroute2) would trip over.
@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    b = playwright_driver.chromium.launch(executable_path=CHROMIUM, headless=True)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def open_notebook(jupyter: JupyterServer, browser: Browser) -> Iterator[Callable[..., NotebookPage]]:
    """`open_notebook(name, cells=None)`: writes a notebook of `cells` (or copies the example
    `notebooks/<name>` when `cells` is None) into the server's root and opens it in a new page."""
    contexts = []

    def open_(name: str, cells: list[str] | None = None, transform: Callable[[str], str] | None = None,
              width: int = 1280, height: int = 900) -> NotebookPage:
        text = new_notebook_json(cells) if cells is not None else (NOTEBOOKS / name).read_text()
        (jupyter.root / name).write_text(transform(text) if transform else text)
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = NotebookPage(context.new_page(), jupyter.app)
        return page.open(jupyter.notebook_url(name))

    yield open_
    for context in contexts:
        context.close()

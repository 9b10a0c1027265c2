"""A class on a real JupyterHub: each user's kernel runs on their own hub-spawned single-user
server, finds the agent through the hub and authenticates with the server's hub token; nobody set
up a token or a file. Cells run as jobs and in sessions; a student notebook from notebooks/ runs
there unchanged."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentproc import Api
from hubkernel import RemoteKernel
from hubproc import CACHE_S, HubSetup

pytestmark = pytest.mark.root

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LOAD = "%load_ext joblet_nb"
OWNERS = ("import json\nfrom joblet_nb.core.client import JobletClient\n"
          "print(json.dumps(sorted({j.owner for j in JobletClient.from_settings().list_jobs()})))")


@pytest.fixture(scope="module")
def kernels(hubsetup: HubSetup) -> Iterator[dict[str, RemoteKernel]]:
    """A kernel on each user's own single-user server, started through the hub."""
    started: dict[str, RemoteKernel] = {}
    try:
        for name in ("s1", "s2", "t1"):
            server = hubsetup.users[name].start_server()
            started[name] = RemoteKernel(server, hubsetup.tokens[name])
            loaded = started[name].run(LOAD)
            assert loaded.error is None, loaded.text()
        yield started
    finally:
        for kernel in started.values():
            kernel.close()


def _ok(kernel: RemoteKernel, code: str) -> str:
    cell = kernel.run(code)
    assert cell.error is None, cell.text()
    return cell.text()


def test_the_kernel_has_a_hub_token_and_no_joblet_settings(kernels):
    env = json.loads(_ok(kernels["s1"], "import os, json\nprint(json.dumps(sorted(os.environ)))"))
    assert "JUPYTERHUB_API_TOKEN" in env and "JUPYTERHUB_API_URL" in env
    assert not [k for k in env if k.startswith("JOBLET_")]


def test_each_user_runs_a_cell_and_sees_only_their_own_jobs(kernels):
    for name, kernel in kernels.items():
        out = _ok(kernel, f"%%joblet run\nprint('hello from a sandbox of {name}')")
        assert f"hello from a sandbox of {name}" in out
    owners = {name: json.loads(_ok(kernel, OWNERS)) for name, kernel in kernels.items()}
    assert owners["s1"] == ["hub:s1"] and owners["s2"] == ["hub:s2"], owners
    assert {"hub:s1", "hub:s2", "hub:t1"} <= set(owners["t1"])  # the teacher (admin group): all


def test_each_user_keeps_variables_in_a_session_of_their_own(hubsetup, kernels):
    for name, kernel in kernels.items():
        _ok(kernel, "%joblet session start")
    try:
        for name, kernel in kernels.items():
            _ok(kernel, f"%%joblet run --session\nwho = '{name}'")
        for name, kernel in kernels.items():
            assert f"session of {name}" in _ok(kernel, "%%joblet run --session\nprint('session of', who)")
        owners = {name: {s["owner"] for s in hubsetup.api(name).call("GET", "/v1/sessions").json()
                         if s["status"] != "ENDED"} for name in kernels}
        assert owners["s1"] == {"hub:s1"} and owners["s2"] == {"hub:s2"}, owners
        assert owners["t1"] >= {"hub:s1", "hub:s2", "hub:t1"}
    finally:
        for kernel in kernels.values():
            kernel.run("%joblet session stop")


def test_info_says_who_the_hub_identified_and_the_limits(kernels):
    info = _ok(kernels["s1"], "%joblet info")
    assert "identified by JupyterHub as s1" in info and "students" in info
    assert "memory 256 MB (group students)" in info and "jobs at once: 0 of 1 (group students)" in info
    assert "JupyterHub" in info  # where the token came from


def test_an_ask_above_the_group_maximum_fails_the_cell_naming_the_group(kernels):
    cell = kernels["s2"].run("%%joblet run --max-memory 1G\nprint('never')")
    assert cell.error is not None and "group students" in cell.text() and "never" not in cell.stdout


def test_the_teacher_builds_a_runtime_and_a_student_gets_a_403(kernels):
    student = kernels["s1"].run("%joblet runtime build python-3.11 --force")
    assert student.error is not None and student.error["ename"] == "AuthError", student.text()
    assert "JupyterHub user s1" in student.text() and "admin_group" in student.text()
    built = _ok(kernels["t1"], "%joblet runtime build python-3.11 --force")
    assert "runtime python-3.11 built" in built, built
    assert "python 3.11" in _ok(kernels["s1"], "%%joblet run -r python-3.11\nimport sys; print('python', sys.version)")


def test_the_student_notebook_runs_unchanged_on_a_hub_spawned_server(kernels):
    nb = json.loads((NOTEBOOKS / "educator.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    try:
        cells = kernels["s1"].run_notebook(nb["cells"])
    finally:
        kernels["s1"].run("%joblet auto off\n%joblet session stop")
    assert len(cells) == len(code), [c.text() for c in cells]
    failed = [(i, c.error) for i, c in enumerate(cells)
              if c.error and "raises-exception" not in code[i].get("metadata", {}).get("tags", [])]
    assert not failed, failed
    assert "exercise 1: correct" in cells[2].text()
    assert "network: unreachable" in "".join(c.text() for c in cells)


def test_a_logged_out_users_server_token_stops_working(hubsetup, kernels):
    """shutdown_on_logout: logging out stops the server, and the hub forgets its token."""
    token = _ok(kernels["s1"], "import os; print(os.environ['JUPYTERHUB_API_TOKEN'])").strip()
    api = Api(hubsetup.agent.url, token)
    assert api.call("GET", "/v1/whoami").json()["name"] == "s1"
    hubsetup.users["s1"].logout()
    time.sleep(CACHE_S)
    r = api.call("GET", "/v1/whoami")
    assert r.status_code == 401 and "does not know this token" in r.json()["error"]["message"]

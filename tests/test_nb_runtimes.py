"""An admin's runtime life cycle from the notebook, on an agent of this module's own:
build (progress and log streamed), list, info, test, require/use, a cell in it, remove.

`python-3.11` is the catalogue runtime that builds without network (a venv of Debian's python).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from IPython.core.error import UsageError

from joblet_nb.core.errors import NotFoundError
from nbshell import NbShell

pytestmark = pytest.mark.root

RUNTIME = "python-3.11"
PREFIX = f"/opt/runtimes/{RUNTIME}/venv"


@pytest.fixture
def admin_nb(nb_shell: NbShell, module_agent: Any, tmp_path: Path) -> Iterator[NbShell]:
    """The session's shell, pointed at this module's agent for the test."""
    user, admin = tmp_path / "user", tmp_path / "admin"
    user.write_text(module_agent.user_token)
    admin.write_text(module_agent.admin_token)
    nb_shell.reset()
    m = nb_shell.magics
    m.url, m.token_file, m.admin_token_file = module_agent.url, str(user), str(admin)
    yield nb_shell
    nb_shell.reset()


def test_runtime_life_cycle_from_a_notebook(admin_nb, module_agent, tmp_path, monkeypatch):
    nb = admin_nb
    built = nb.run(f"%joblet runtime build {RUNTIME}")
    assert built.error is None, (built.error, built.stdout, built.stderr)
    assert "[1/6] validate" in built.stdout and "[6/6] publish" in built.stdout  # progress
    assert "creating a venv" in built.stdout  # the build log, streamed
    assert f"runtime {RUNTIME} built" in built.stdout

    listed = nb.run("%joblet runtime list")
    assert RUNTIME in listed.texts() and "verified" in listed.texts()

    info = nb.run(f"%joblet runtime info {RUNTIME}")
    assert info.error is None and PREFIX in info.texts()

    tested = nb.run(f"%joblet runtime test {RUNTIME}")
    assert tested.error is None, tested.stdout
    assert "python 3.11" in tested.stdout and "ok" in tested.stdout

    assert nb.run(f"%joblet require {RUNTIME}").error is None
    assert nb.run(f"%joblet use {RUNTIME} --max-memory 128M").error is None
    nb.shell.user_ns["xs"] = [1, 2, 3]
    cell = nb.run("%%joblet run --in xs --out total\nimport sys\nprint(sys.prefix)\ntotal = sum(xs)")
    assert cell.error is None, cell.stderr
    assert PREFIX + "\n" in cell.stdout and nb.shell.user_ns["total"] == 6
    record = nb.magics.last_result.record
    assert record.runtime == RUNTIME and record.limits.memory_mb == 128

    # the educator notebook declares this runtime first, and here gets it (no fallback)
    from joblet_nb.execute import execute

    monkeypatch.setenv("JOBLET_URL", module_agent.url)
    monkeypatch.setenv("JOBLET_TOKEN", module_agent.user_token)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "educator.ipynb"
    shutil.copy(Path(__file__).resolve().parent.parent / "notebooks" / "educator.ipynb", path)
    done = execute(path, cwd=tmp_path, timeout=300)
    first = "".join(o.get("text", "") for o in done.cells[1].outputs)
    assert f"runtime={RUNTIME}" in first and "instead" not in first

    nb.run("%joblet use base")
    removed = nb.run(f"%joblet runtime remove {RUNTIME}")
    assert removed.error is None, removed.stdout
    gone = nb.run(f"%joblet runtime info {RUNTIME}")
    assert isinstance(gone.error, NotFoundError)


def test_build_of_a_runtime_of_your_own_needs_spec_for_files(admin_nb, tmp_path):
    setup = tmp_path / "setup.sh"
    setup.write_text("echo hi\n")
    cell = admin_nb.run(f"%joblet runtime build mine --file {setup}")
    assert isinstance(cell.error, UsageError) and "--spec" in str(cell.error)


def test_a_failing_runtime_build_fails_the_cell(admin_nb, tmp_path):
    spec = tmp_path / "runtime.yml"
    spec.write_text((Path(__file__).resolve().parent.parent / "runtimes" / RUNTIME / "runtime.yml")
                    .read_text().replace(RUNTIME, "broken-rt"))
    setup = tmp_path / "setup.sh"
    setup.write_text("echo 'about to fail' >&2\nexit 3\n")
    cell = admin_nb.run(f"%joblet runtime build broken-rt --spec {spec} --file {setup}")
    assert cell.error is not None, cell.stderr
    assert "about to fail" in cell.stderr  # the build log, shown once as it streamed
    assert "about to fail" not in "\n".join(cell.error._render_traceback_())

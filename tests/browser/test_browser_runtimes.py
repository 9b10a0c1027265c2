"""An admin builds a runtime in JupyterLab 4 and Notebook 7: during the setup phase, which has no step
count of its own, the progress widget turns a spinner with the phase's elapsed time and the setup
log's last line; `%joblet runtime list` then says when the runtime was built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.browser]

CATALOGUE = Path(__file__).resolve().parents[2] / "runtimes" / "python-3.11"
SLOW_SETUP = """PY=/usr/bin/python3.11
echo "creating a venv from $PY"
"$PY" -m venv --without-pip "$RUNTIME_PREFIX/venv"
for i in 1 2 3 4 5 6; do echo "setup line $i"; sleep 1; done
"""


def test_a_build_shows_its_setup_phase_and_the_list_its_time(open_notebook, jupyter, admin_api):
    name = f"jnb-slow-{jupyter.app}"
    spec = (CATALOGUE / "runtime.yml").read_text().replace("python-3.11", name)
    (jupyter.root / "runtime.yml").write_text(spec)
    (jupyter.root / "setup.sh").write_text(SLOW_SETUP)
    cells = ["%load_ext joblet_nb",
             f"%joblet runtime build {name} --spec runtime.yml --file setup.sh",
             "%joblet runtime list"]
    page = open_notebook("build.ipynb", cells)
    page.run_cell(0)
    run = page.start_cell(1)
    try:
        label = page.widget(1, "joblet-build-label")
        first = wait_until(lambda: _setup_label(label), timeout=120)
        later = wait_until(lambda: (lambda t: t if t not in (None, first) else None)(_setup_label(label)),
                           timeout=60)
        assert re.search(r"step \d+/\d+ setup: .* [◐◓◑◒] \d+\.\ds", later), later
        page.wait_run(run)
        assert "[COMPLETED]" in label.inner_text()
        page.run_cell(2)
        row = next(ln for ln in page.text(2).splitlines() if name in ln)
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row), row  # built: a time, not a job id
    finally:
        admin_api.call("DELETE", f"/v1/runtimes/{name}")


def _setup_label(label) -> str | None:
    text = label.inner_text() if label.count() else ""
    return text if "setup" in text and "setup line" in text else None

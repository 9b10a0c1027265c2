"""A job that prints 200,000 lines, in JupyterLab 4 and Notebook 7: the cell ends, shows every line
in order in its own output, and the tab still answers (how fast, against the plain loop, is
benchmarks/notebook_output.py's job)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.root, pytest.mark.browser]

LINES = 200_000
CELLS = [
    "%load_ext joblet_nb",
    f"%%joblet run --timeout 600\nfor i in range({LINES}):\n    print('line', i)",
    "print('next cell')",
]


def test_a_chatty_job_shows_all_its_output_and_the_tab_answers(open_notebook):
    page = open_notebook("chatty.ipynb", CELLS)
    page.run_cell(0)
    page.run_cell(1, timeout_s=900)
    text = page.page.evaluate(
        """() => Array.from(jupyterapp.shell.currentWidget.content.widgets[1].node
                  .querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stdout"]'))
                  .map(o => o.textContent).join('')""")
    lines = text.splitlines()
    assert len(lines) == LINES and lines[0] == "line 0" and lines[-1] == f"line {LINES - 1}"
    assert lines == [f"line {i}" for i in range(LINES)]
    assert "COMPLETED" in page.widget(1, "joblet-status").inner_text()
    assert page.page.evaluate("() => 1 + 1") == 2  # the tab answers
    assert page.run_cell(2) and page.text(2).strip() == "next cell"

"""The example notebooks in JupyterLab 4 and Notebook 7, as a person runs them: cell by cell, reading
what the page shows (live output while a cell runs, the status line as a widget, images)."""

from __future__ import annotations

import json
import time

import pytest

from .page import NotebookPage

pytestmark = [pytest.mark.root, pytest.mark.browser]

# Appended to the data scientist's notebook: a job that prints six lines 0.5 s apart.
STREAMING_CELL = """%%joblet run --timeout 60
import time
for i in range(6):
    print(f"tick {i}", flush=True)
    time.sleep(0.5)"""


def _with_streaming_cell(text: str) -> str:
    nb = json.loads(text)
    nb["cells"].append({"cell_type": "code", "execution_count": None, "id": "streaming",
                        "metadata": {}, "outputs": [], "source": STREAMING_CELL})
    return json.dumps(nb)


def _run_until(page: NotebookPage, stop_before: int) -> None:
    for i in page.code_cells():
        if i >= stop_before:
            return
        page.run_cell(i)


def test_data_scientist_notebook_streams_live_with_a_status_widget(open_notebook):
    page = open_notebook("data-scientist.ipynb", transform=_with_streaming_cell)
    streaming = page.cell_count() - 1
    _run_until(page, streaming)

    summary = page.code_cells()[2]  # the --in/--out cell
    assert "summary: {'n': 5000" in page.text(summary)
    status = page.widget(summary, "joblet-status")
    assert status.count() == 1, "the status line renders as a widget view, not a text fallback"
    assert "COMPLETED" in status.inner_text()

    show = page.code_cells()[4]
    assert page.page.locator(".jp-Notebook .jp-Cell").nth(show).locator("img").count() >= 1, \
        "the --show image is shown inline"
    oom = page.code_cells()[5]
    assert "oom" in page.text(oom)

    run = page.start_cell(streaming)
    started = time.monotonic()
    first = page.wait_for_text(streaming, "tick 0")
    text_at_first = page.text(streaming)
    running_at_first = page.is_running(streaming)
    live_status = page.widget(streaming, "joblet-status").inner_text()
    page.wait_run(run)
    assert running_at_first and "tick 5" not in text_at_first, \
        f"the first line shows while the job still runs ({first - started:.2f}s after start)"
    assert "RUNNING" in live_status or "PENDING" in live_status
    assert "tick 5" in page.text(streaming)
    assert "COMPLETED" in page.widget(streaming, "joblet-status").inner_text()
    assert not page.unexpected_page_errors()

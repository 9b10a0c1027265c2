"""`%joblet ui` in JupyterLab 4 and Notebook 7: Stop says "stopping..." and then how the job ended,
with the button disabled; running jobs first, 20 rows and a "more" control; sliders that start at
the limits a job really gets, and Clear that puts them back."""

from __future__ import annotations

import re

import pytest

from waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.browser]

CELLS = [
    "%load_ext joblet_nb",
    "%%joblet run --bg\nimport time\ntime.sleep(120)",
    "%joblet ui",
]


def _rows(panel):
    return panel.locator(".joblet-job")


def test_the_panel_shows_what_is_true(open_notebook, api):
    for _ in range(21):  # more finished jobs than one page holds
        api.submit(command=["true"])
    limits = api.call("GET", "/v1/limits").json()
    page = open_notebook("panel.ipynb", CELLS)
    page.run_cell(0)
    page.run_cell(1)
    job_id = re.search(r"job ([0-9a-f]{16}) runs in the background", page.text(1)).group(1)
    page.run_cell(2)
    panel = page.widget(2, "joblet-ui")

    first = _rows(panel).nth(0)
    assert job_id in first.inner_text() and "RUNNING" in first.inner_text(), "running jobs come first"
    assert _rows(panel).count() == 20
    assert all(_rows(panel).nth(i).locator(".joblet-stop").is_disabled() for i in range(1, 20)), \
        "a finished job's Stop button is disabled"
    more = panel.locator(".joblet-more")
    assert more.is_visible() and "older" in more.inner_text()
    more.click()
    wait_until(lambda: _rows(panel).count() > 20)

    readout = panel.locator(".joblet-limit-memory-mb .widget-readout")
    assert readout.inner_text() == f"{limits['defaults']['memory_mb'] / 1024:g} GB"
    assert panel.locator(".joblet-limit-pids .widget-readout").inner_text() == str(limits["defaults"]["pids"])
    assert panel.locator(".joblet-limit-cpu-percent .widget-readout").inner_text() == "no limit"
    summary = panel.locator(".joblet-summary")
    assert "limits: agent defaults" in summary.inner_text()
    handle = panel.locator(".joblet-limit-memory-mb .noUi-handle")
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.page.mouse.move(x, y)  # drag the memory slider a little to the left, as a person would
    page.page.mouse.down()
    page.page.mouse.move(x - 40, y, steps=8)
    page.page.mouse.up()
    wait_until(lambda: "memory_mb=" in summary.inner_text())
    dragged = int(re.search(r"memory_mb=(\d+)", summary.inner_text()).group(1))
    default = limits["defaults"]["memory_mb"]
    assert default / 4 <= dragged < default, (dragged, "a short drag moves a step or two on the log scale")
    panel.locator(".joblet-clear").click()
    wait_until(lambda: "limits: agent defaults" in summary.inner_text())
    assert readout.inner_text() == f"{limits['defaults']['memory_mb'] / 1024:g} GB"

    stop = first.locator(".joblet-stop")
    stop.click()
    wait_until(lambda: "stopping..." in _rows(panel).nth(0).inner_text()
               or "STOPPED" in _rows(panel).nth(0).inner_text())
    assert _rows(panel).nth(0).locator(".joblet-stop").is_disabled()
    row = panel.locator(".joblet-job", has_text=job_id)
    wait_until(lambda: "STOPPED" in row.inner_text(), timeout=90)
    assert row.locator(".joblet-stop").is_disabled()
    assert f"job {job_id} STOPPED" in panel.locator(".joblet-message").inner_text()

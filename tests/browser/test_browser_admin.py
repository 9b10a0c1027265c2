"""The admin's example notebook in JupyterLab 4 and Notebook 7, run cell by cell as an admin would:
a runtime build with its progress widget, the runtime list, info and test as tables, and the clear
error of a runtime the agent lacks (issue 10: all three example notebooks run in the browser)."""

from __future__ import annotations

from typing import Any

import pytest

from .page import NotebookPage

pytestmark = [pytest.mark.root, pytest.mark.browser]


def _cell(page: NotebookPage, i: int) -> Any:
    return page.page.locator(".jp-Notebook .jp-Cell").nth(i)


def test_admin_notebook_builds_lists_and_tests_a_runtime(open_notebook):
    page = open_notebook("admin.ipynb")
    cells = page.code_cells()
    for i in cells:
        page.run_cell(i, timeout_s=600)
    build, listing, names, info, tested, missing = cells[1:7]
    label = page.widget(build, "joblet-build-label")
    assert label.count() == 1 and "[COMPLETED]" in label.inner_text(), "the build's progress is a widget"
    assert "runtime python-3.11 built" in page.text(build)
    assert _cell(page, listing).locator("table td", has_text="python-3.11").count() >= 1, page.text(listing)
    assert "published runtimes:" in page.text(names) and "python-3.11" in page.text(names)
    for i in (info, tested):
        assert _cell(page, i).locator("table").count() >= 1, page.text(i)
    assert "as expected" in page.text(missing) and "no-such-runtime" in page.text(missing)
    assert not page.unexpected_page_errors()

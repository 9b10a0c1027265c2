"""Sessions in JupyterLab 4 and Notebook 7, as a person sees them (issue 10, item 6): the data
scientist's notebook with a real pandas table and plot rendered from the session's sandbox, the
educator's notebook under `%joblet auto` with every sandboxed cell marked, lines streaming into a
session cell while it runs, `%joblet ui` and the status line as widgets, hostile HTML from the
session shown sanitised with no script run, and the toolbar's interrupt button ending a session
cell within 2 s while the next cell still sees the earlier variables."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .page import NotebookPage

pytestmark = [pytest.mark.root, pytest.mark.browser]

TICKS = "import time\nfor i in range(6):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)"
HOSTILE_HTML = ("'<table class=\"dataframe\"><tr><td>safe cell</td></tr></table>'\n"
                "        '<script>window.jnbPwned = 1</script>'\n"
                "        '<img src=x onerror=\"window.jnbPwned = 2\">'\n"
                "        '<a href=\"javascript:window.jnbPwned = 3\">link</a>'\n"
                "        '<svg><script>window.jnbPwned = 4</script></svg>'\n"
                "        '<form action=\"javascript:window.jnbPwned = 5\"><input name=q></form>'\n"
                "        '<b id=\"jnbClobber\" name=\"jnbClobber\">bold</b>'\n"
                "        '<button data-commandlinker-command=\"terminal:create-new\">run</button>'")
HOSTILE = ("class Page:\n"
           "    def _repr_html_(self):\n"
           f"        return ({HOSTILE_HTML})\n"
           "display(Page())\n"
           "Page()")


def _cell(page: NotebookPage, i: int) -> Any:
    return page.page.locator(".jp-Notebook .jp-Cell").nth(i)


def _insert_before(text: str, before: str, sources: list[str]) -> str:
    """The notebook with code cells of `sources` inserted before the cell whose source is `before`."""
    nb = json.loads(text)
    at = next(i for i, c in enumerate(nb["cells"]) if "".join(c["source"]).strip() == before)
    nb["cells"][at:at] = [{"cell_type": "code", "execution_count": None, "id": f"jnb-added-{n}",
                           "metadata": {}, "outputs": [], "source": src} for n, src in enumerate(sources)]
    return json.dumps(nb)


def _streams_live(page: NotebookPage, i: int) -> None:
    """Cell `i` prints tick 0..5 half a second apart: the first line shows while the cell runs."""
    run = page.start_cell(i)
    page.wait_for_text(i, "tick 0")
    text_at_first, running_at_first = page.text(i), page.is_running(i)
    page.wait_run(run)
    assert running_at_first and "tick 5" not in text_at_first, "the first line shows while the cell still runs"
    assert "tick 5" in page.text(i)


@pytest.mark.slow
def test_data_scientist_session_renders_a_pandas_table_a_plot_and_streams(open_notebook, ml_runtime):
    added = ["%%joblet run --session\n" + TICKS, "%joblet ui"]
    page = open_notebook("data-scientist.ipynb",
                         transform=lambda text: _insert_before(text, "%joblet session stop", added))
    cells = page.code_cells()
    streaming, ui = cells[11], cells[12]
    for i in cells:
        if i == streaming:
            _streams_live(page, i)
        else:
            page.run_cell(i)

    assert "COMPLETED" in page.widget(cells[2], "joblet-status").inner_text(), "a job's status line is a widget"
    table, plot = _cell(page, cells[9]), _cell(page, cells[10])
    assert "skipped" not in page.text(cells[8])
    assert table.locator("table.dataframe th", has_text="mid-high").count() >= 1, page.text(cells[9])
    img = plot.locator("img[src^='data:image/png']")
    assert img.count() == 1 and img.first.evaluate("e => e.naturalWidth") > 100
    assert page.widget(ui, "joblet-ui").count() == 1, "%joblet ui renders as a widget view"
    assert not page.unexpected_page_errors()


def test_educator_notebook_runs_under_auto_with_every_cell_marked(open_notebook):
    added = [TICKS, "%joblet ui"]
    page = open_notebook("educator.ipynb",
                         transform=lambda text: _insert_before(text, "%joblet session status", added))
    cells = page.code_cells()
    streaming, ui, status = cells[-3], cells[-2], cells[-1]
    for i in cells:
        if i == streaming:
            _streams_live(page, i)
        else:
            page.run_cell(i)

    sandboxed = cells[1:-2]
    for i in sandboxed:
        mark = _cell(page, i).locator(".joblet-session-mark")
        assert mark.count() == 1 and mark.is_visible(), f"cell {i} shows that it ran in the sandbox"
        assert "sandbox" in mark.inner_text()
    for i in (cells[0], ui, status):
        assert _cell(page, i).locator(".joblet-session-mark").count() == 0, "a %joblet cell runs here"
    assert "exercise 1: correct" in page.text(cells[2])
    assert "ZeroDivisionError" in page.text(cells[3])
    assert "31.95" in page.text(cells[4])
    assert "unreachable, as expected" in page.text(cells[5])
    assert page.widget(ui, "joblet-ui").count() == 1, "%joblet ui stays a local widget under auto"
    assert "BUSY" in page.text(status) or "READY" in page.text(status)
    assert not page.unexpected_page_errors()


def test_html_from_a_session_is_shown_sanitised_and_runs_no_script(open_notebook):
    page = open_notebook("hostile.ipynb", ["%load_ext joblet_nb\n%joblet session start",
                                           "%%joblet run --session\n" + HOSTILE, "%joblet session stop"])
    for i in range(3):
        page.run_cell(i)
    output = _cell(page, 1).locator(".jp-OutputArea-output")  # what the outputs rendered (no app chrome)
    assert page.text(1).count("safe cell") == 2, "the display and the result both show their table"
    assert output.locator("td", has_text="safe cell").count() == 2
    for hostile in ("script", "button", "form", "input", "svg", "iframe", "a[href^='javascript']",
                    "[onerror]", "#jnbClobber", "[name]"):
        assert output.locator(hostile).count() == 0, f"{hostile} reached the page"
    links = output.locator("a")
    for n in range(links.count()):
        links.nth(n).click()
    time.sleep(0.5)  # a clicked javascript: link or an image's onerror would have set the flag by now
    assert page.page.evaluate("() => window.jnbPwned") is None, "a script from the sandbox ran"
    assert page.page.evaluate("() => document.getElementById('jnbClobber')") is None
    assert not page.unexpected_page_errors()


def test_the_interrupt_button_ends_a_session_cell_within_2s_and_variables_stay(open_notebook):
    page = open_notebook("interrupt.ipynb", ["%load_ext joblet_nb\n%joblet session start\n%joblet auto",
                                             "kept = 'still here'",
                                             "import time\nprint('sleeping', flush=True)\ntime.sleep(600)",
                                             "kept"])
    page.run_cell(0)
    page.run_cell(1)
    run = page.start_cell(2)
    page.wait_for_text(2, "sleeping")
    button = page.page.locator(".jp-NotebookPanel-toolbar [data-jp-item-name='interrupt'] button")
    pressed = time.monotonic()
    button.click()
    page.page.wait_for_function(
        "(i) => !jupyterapp.shell.currentWidget.content.widgets[i].node"
        ".querySelector('.jp-InputPrompt').innerText.includes('*')", arg=2, timeout=10_000, polling=50)
    took = time.monotonic() - pressed
    page.wait_run(run)
    assert took <= 2.0, f"the interrupted session cell ended {took:.2f}s after the button"
    assert "KeyboardInterrupt" in page.text(2)
    page.run_cell(3)
    assert "'still here'" in page.text(3)
    assert not page.unexpected_page_errors()

"""Driving one notebook in a real page, and reading what a person sees there.

JupyterLab 4 and Notebook 7 share the notebook widgets, so one driver serves both: the app object
(`jupyterapp`, exposed by the server option `expose_app_in_browser`) runs commands, and assertions
read the rendered DOM (output areas, widget views), not the kernel's messages.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the browser extra is only needed to run the browser tests
    from playwright.sync_api import Page

KERNEL_TIMEOUT_MS = 90_000
_run_ids = itertools.count(1)

# Notebook 7 logs this page error on every load (a settings schema lookup); it is not ours.
KNOWN_PAGE_ERRORS = ("Cannot read properties of undefined (reading 'schema')",)

_OUTPUTS_JS = """
(i) => {
  const cell = jupyterapp.shell.currentWidget.content.widgets[i];
  return Array.from(cell.node.querySelectorAll('.jp-OutputArea-output')).map(o => ({
    mime: o.getAttribute('data-mime-type') || '',
    text: o.innerText,
    classes: o.className,
    widget: o.querySelector('.jupyter-widgets') !== null,
  }));
}
"""


_COMPLETER_ITEMS_JS = """
() => Array.from(document.querySelectorAll('.jp-Completer:not(.lm-mod-hidden) .jp-Completer-item')).map(e => [
  (e.querySelector('.jp-Completer-match') || e).innerText.trim(),
  ((e.querySelector('.jp-Completer-typeExtended') || {}).innerText || '').trim()])
"""


@dataclass
class Output:
    """One output item as rendered: its mime type, visible text, and whether it is a widget view."""

    mime: str
    text: str
    classes: str
    widget: bool

    @property
    def is_stderr(self) -> bool:
        return self.mime == "application/vnd.jupyter.stderr"


@dataclass
class NotebookPage:
    """One opened notebook; cells are addressed by their index in the notebook (0 = first)."""

    page: Page
    app: str
    page_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    # ---- opening --------------------------------------------------------------------------

    def open(self, url: str) -> "NotebookPage":
        self.page.goto(url, timeout=KERNEL_TIMEOUT_MS)  # a loaded machine serves the app slowly
        self.wait_for_kernel()
        return self

    def wait_for_kernel(self, timeout_ms: int = KERNEL_TIMEOUT_MS) -> None:
        """Until the notebook's kernel is connected and idle (the page is ready to run cells)."""
        self.page.wait_for_function(
            """() => {
                 const w = window.jupyterapp && jupyterapp.shell.currentWidget;
                 const k = w && w.sessionContext && w.sessionContext.session
                           && w.sessionContext.session.kernel;
                 return !!k && k.status === 'idle' && k.connectionStatus === 'connected'
                        && w.content && w.content.widgets.length > 0;
               }""",
            timeout=timeout_ms,
        )

    # ---- running ----------------------------------------------------------------------------

    def cell_count(self) -> int:
        return int(self.page.evaluate("() => jupyterapp.shell.currentWidget.content.widgets.length"))

    def cell_source(self, i: int) -> str:
        return str(self.page.evaluate(
            "(i) => jupyterapp.shell.currentWidget.content.widgets[i].model.sharedModel.getSource()", i))

    def code_cells(self) -> list[int]:
        return list(self.page.evaluate(
            """() => jupyterapp.shell.currentWidget.content.widgets
                 .map((c, i) => c.model.type === 'code' ? i : -1).filter(i => i >= 0)"""))

    def start_cell(self, i: int) -> str:
        """Run cell `i` as a person would (select it, run it) without waiting; returns a run id.

        The command's promise is kept in the page rather than returned, so the test can look at
        the page and click while the cell runs.
        """
        run = f"r{next(_run_ids)}"
        self.page.evaluate(
            """([i, run]) => {
                 window.__jnbRuns = window.__jnbRuns || {};
                 const nb = jupyterapp.shell.currentWidget.content;
                 nb.activeCellIndex = i;
                 nb.deselectAll();
                 window.__jnbRuns[run] = 'running';
                 jupyterapp.commands.execute('notebook:run-cell').then(
                   ok => { window.__jnbRuns[run] = 'done'; },
                   err => { window.__jnbRuns[run] = 'error: ' + err; });
               }""",
            [i, run],
        )
        return run

    def wait_run(self, run: str, timeout_s: float = 300) -> None:
        """Until the run's cell has finished executing (ok or failed: the cell's output says which)."""
        self.page.wait_for_function(
            "(run) => window.__jnbRuns && window.__jnbRuns[run] !== 'running'", arg=run,
            timeout=timeout_s * 1000, polling=100)
        state = self.page.evaluate("(run) => window.__jnbRuns[run]", run)
        assert state == "done", f"run-cell command: {state}"

    def run_cell(self, i: int, timeout_s: float = 300) -> list[Output]:
        """Run cell `i` to its end; returns its rendered outputs."""
        self.wait_run(self.start_cell(i), timeout_s)
        return self.outputs(i)

    def is_running(self, i: int) -> bool:
        """The cell's prompt shows `[*]`, as a person sees while it runs."""
        return "*" in self.prompt(i)

    def prompt(self, i: int) -> str:
        return str(self.page.evaluate(
            """(i) => { const p = jupyterapp.shell.currentWidget.content.widgets[i]
                          .node.querySelector('.jp-InputPrompt'); return p ? p.innerText : ''; }""", i))

    def tab_at_end(self, i: int, wait_s: float = 6.0) -> tuple[str, list[tuple[str, str]]]:
        """Press Tab at the end of cell `i`'s source, as a person completing; returns the source
        afterwards and the completer list's items as (text, type); the type is empty for Lab's
        own words-of-this-document provider, and the kernel's type for the kernel's."""
        self.page.evaluate(
            """(i) => { const nb = jupyterapp.shell.currentWidget.content;
                        nb.activeCellIndex = i; nb.deselectAll(); nb.mode = 'edit';
                        const ed = nb.widgets[i].editor;
                        ed.focus();
                        ed.setCursorPosition(ed.getPositionAt(ed.model.sharedModel.getSource().length)); }""", i)
        before = self.cell_source(i)
        self.page.keyboard.press("Tab")
        deadline = time.monotonic() + wait_s
        items: list[tuple[str, str]] = []
        while time.monotonic() < deadline:
            items = [tuple(x) for x in self.page.evaluate(_COMPLETER_ITEMS_JS)]
            if items or self.cell_source(i) != before:
                break
            time.sleep(0.1)
        self.page.keyboard.press("Escape")
        return self.cell_source(i), items

    # ---- reading ----------------------------------------------------------------------------

    def outputs(self, i: int) -> list[Output]:
        return [Output(**o) for o in self.page.evaluate(_OUTPUTS_JS, i)]

    def text(self, i: int) -> str:
        """Everything a person reads in cell `i`'s output area."""
        return "\n".join(o.text for o in self.outputs(i))

    def wait_for_text(self, i: int, needle: str, timeout_s: float = 60) -> float:
        """Until `needle` shows in cell `i`'s output; returns the monotonic time it was seen."""
        self.page.wait_for_function(
            """([i, needle]) => jupyterapp.shell.currentWidget.content.widgets[i]
                 .node.querySelector('.jp-OutputArea').innerText.includes(needle)""",
            arg=[i, needle], timeout=timeout_s * 1000, polling=50)
        return time.monotonic()

    def widget(self, i: int, css_class: str) -> Any:
        """The rendered widget view with this class in cell `i` (a Playwright locator)."""
        return self.page.locator(".jp-Notebook .jp-Cell").nth(i).locator(f".{css_class}")

    def unexpected_page_errors(self) -> list[str]:
        return [e for e in self.page_errors if not any(k in e for k in KNOWN_PAGE_ERRORS)]

    def save(self) -> None:
        """Save the notebook as a person would (Ctrl-S)."""
        self.page.evaluate("() => jupyterapp.commands.execute('docmanager:save')")


def new_notebook_json(cells: list[str], kernel: str = "python3") -> str:
    """A notebook file of code cells (`cells` are their sources)."""
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"c{n}", "metadata": {},
                   "outputs": [], "source": src} for n, src in enumerate(cells)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": kernel}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    return json.dumps(nb, indent=1)

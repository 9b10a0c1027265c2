"""Tab in JupyterLab and Notebook 7: the magics' subcommands and options complete; a `%%joblet`
cell's body offers nothing of the host kernel. (The frontends' own provider also offers words of
the document, untyped; only the kernel's typed items are the kernel's.)"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.root, pytest.mark.browser]

CELLS = [
    "%load_ext joblet_nb\nsamples_in_kernel = [1, 2, 3]",
    "%%joblet run --max-m",
    "%joblet runtime bu",
    "%%joblet run\nx = samples_in",
]


def _kernel_items(items):
    return [text for text, kind in items if kind]


def _completes_to(page, i, expected):
    source, items = page.tab_at_end(i)
    assert source == expected or _kernel_items(items) == [expected.rsplit(" ", 1)[-1]], (source, items)


def test_magics_complete_and_a_sandbox_cell_gets_no_host_names(open_notebook):
    page = open_notebook("completion.ipynb", CELLS)
    page.run_cell(0)
    _completes_to(page, 1, "%%joblet run --max-memory")
    _completes_to(page, 2, "%joblet runtime build")
    source, items = page.tab_at_end(3)
    assert source == CELLS[3] and _kernel_items(items) in ([], ["samples_in"]), (source, items)
    assert not any("samples_in_kernel" in text for text, _ in items)

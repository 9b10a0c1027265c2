"""What a cell tells its user, as JupyterLab 4 and Notebook 7 show it: one traceback per failure with
the cell's own line numbers, `[joblet]` lines as plain output, a one-line hint naming the option
that fixes a first-ten-minutes failure, and a last-line value and open figures shown like a local
cell's, with nothing of the sandbox's HTML able to run a script in the page."""

from __future__ import annotations

import pytest

from test_cell_runner import STAND_IN_PYPLOT  # the base python3 has no matplotlib: a stand-in pyplot

pytestmark = [pytest.mark.root, pytest.mark.browser]

HOSTILE = ("\"<b class='jnb-bold'>bold</b><img src=x onerror='window.__pwned=1'>"
           "<script>window.__pwned=2</script>\"")
CELLS = [
    "%load_ext joblet_nb\nsamples = [1, 2, 3]",
    "%%joblet run --in samples\nx = sum(samples)\n\n1 / 0",                 # 1: one traceback, line 4
    "%%joblet run\nopen('data.csv')",                                         # 2: --upload
    "%%joblet run\nimport numpy",                                             # 3: runtimes
    "%%joblet run\nimport socket\nsocket.getaddrinfo('example.org', 80)",    # 4: --network bridge
    "%%joblet run\ndf = {'a': 1}",                                            # 5: sets df in a sandbox
    "%%joblet run\nprint(df)",                                                # 6: --in/--out or a session
    "%%joblet run --memory 1G\nprint(1)",                                     # 7: --max-memory
    "%%joblet run\nname = input('name? ')",                                   # 8: stdin
    "%%joblet run\nprint('computing')\n{'mean': 2.0, 'n': 3}",               # 9: a last-line value
    "%%joblet run\n" + STAND_IN_PYPLOT,                                      # 10: an open figure
    "%%joblet run\nclass T:\n    def _repr_html_(self):\n        return " + HOSTILE + "\nT()",  # 11: untrusted HTML
]


def test_failures_read_right_and_point_at_the_fix(open_notebook):
    page = open_notebook("feedback.ipynb", CELLS)
    for i in range(len(CELLS)):
        page.run_cell(i)

    outs = page.outputs(1)
    text = page.text(1)
    assert text.count("Traceback") == 1 and text.count("ZeroDivisionError") == 1, text
    assert 'File "<cell>", line 4' in text and "1 / 0" in text
    info = [o for o in outs if "[joblet] in: samples" in o.text]
    assert info and not info[0].is_stderr, "an information line is plain output, not an error"

    assert "hint: the sandbox's /work has only the files you send: --upload data.csv" in page.text(2)
    assert "hint: numpy is not in the base python3" in page.text(3)
    assert "hint: this job has no network; --network bridge gives it one" in page.text(4)
    assert "--out df" in page.text(6) and "--in df" in page.text(6) and "session" in page.text(6)
    assert "did you mean --max-memory?" in page.text(7)
    assert "stdin is not connected" in page.text(8)
    assert "computing" in page.text(9) and "{'mean': 2.0, 'n': 3}" in page.text(9)
    assert page.page.locator(".jp-Notebook .jp-Cell").nth(10).locator("img").count() == 2  # two figures
    assert page.widget(11, "jnb-bold").inner_text() == "bold"  # the table-and-text HTML shows
    assert page.page.evaluate("() => window.__pwned === undefined"), "no script from the sandbox ran"
    for i in (2, 3, 4, 6, 8):
        assert page.text(i).count("hint:") <= 1 and page.text(i).count("Traceback") == 1, page.text(i)

"""What a cell tells its user, as JupyterLab 4 and Notebook 7 show it: one traceback per failure with
the cell's own line numbers, `[joblet]` lines as plain output, a one-line hint naming the option
that fixes a first-ten-minutes failure, and a last-line value shown like a local cell's."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.root, pytest.mark.browser]

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
    for i in (2, 3, 4, 6, 8):
        assert page.text(i).count("hint:") <= 1 and page.text(i).count("Traceback") == 1, page.text(i)

"""The cell runner in a real sandbox: tracebacks that read like a notebook's, `input()` that says
why it cannot read, and a cell's last value and open figures kept for the notebook."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.root


def test_a_traceback_quotes_the_cell_and_leaves_the_runner_out(api):
    result = api.run(script="\nx = 1\ndef f():\n    return 1 / 0\nf()\n")
    assert result.record["status"] == "FAILED"
    assert 'File "<cell>", line 5, in <module>' in result.stderr
    assert 'File "<cell>", line 4, in f' in result.stderr and "return 1 / 0" in result.stderr
    assert "run.py" not in result.stderr and result.stderr.count("Traceback") == 1


def test_a_syntax_error_is_the_error_alone(api):
    result = api.run(script="\nx = (\n")
    assert result.stderr.startswith('  File "<cell>", line 2') and "SyntaxError" in result.stderr
    assert "ast.py" not in result.stderr and "Traceback" not in result.stderr


def test_input_says_that_stdin_is_not_connected(api):
    result = api.run(script="name = input('name? ')\n")
    assert "EOFError: input() cannot read: a joblet job's stdin is not connected" in result.stderr
    assert "--in NAME" in result.stderr and "_no_input" not in result.stderr

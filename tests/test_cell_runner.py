"""The cell runner in a real sandbox: tracebacks that read like a notebook's, `input()` that says
why it cannot read, and a cell's last value and open figures kept for the notebook."""

from __future__ import annotations

import base64

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


def test_the_last_value_is_shown_and_its_html_filtered(api):
    script = ("class Table:\n"
              "    def __repr__(self): return 'Table(2 rows)'\n"
              "    def _repr_html_(self): return '<table><tr><td>1</td></tr></table><script>alert(1)</script>'\n"
              "Table()\n")
    result = api.run(script=script)
    assert result.record["status"] == "COMPLETED", result.explain()
    shown = [e for e in result.events if e["type"] in ("result", "display")]
    assert [e["type"] for e in shown] == ["result"]
    data = shown[0]["data"]
    assert data["text/plain"] == "Table(2 rows)"
    assert "<td>1</td>" in data["text/html"] and "script" not in data["text/html"]
    assert result.events[-1]["type"] == "exit"


def test_a_none_last_value_shows_nothing(api):
    result = api.run(script="print('hi')\nNone\n")
    assert not [e for e in result.events if e["type"] in ("result", "display")]
    assert result.stdout == "hi\n"


# The base python3 has no matplotlib (the python-3.11-ml runtime's test in test_runtimes.py shows a
# real figure); here a stand-in `matplotlib.pyplot` with the calls the runner makes draws a real PNG.
STAND_IN_PYPLOT = """
import struct, sys, types, zlib
def png():
    def chunk(tag, data):
        return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))
    return (b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 1, 1, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\\x00\\xff\\x00\\x00')) + chunk(b'IEND', b''))
class Figure:
    def savefig(self, f, **kw): f.write(png())
figures = {1: Figure(), 2: Figure()}
plt = types.ModuleType('matplotlib.pyplot')
plt.get_fignums = lambda: sorted(figures)
plt.figure = lambda n: figures[n]
plt.close = lambda fig: figures.pop(next(k for k, v in figures.items() if v is fig))
plt.show = lambda: None
sys.modules['matplotlib.pyplot'] = plt
plt.show()
"""


def test_figures_left_open_are_shown_as_png(api):
    result = api.run(script=STAND_IN_PYPLOT)
    assert result.record["status"] == "COMPLETED", result.explain()
    shown = [e for e in result.events if e["type"] == "display"]
    assert len(shown) == 2 and all(e["data"]["image/png"] for e in shown)
    assert base64.b64decode(shown[0]["data"]["image/png"]).startswith(b"\x89PNG")

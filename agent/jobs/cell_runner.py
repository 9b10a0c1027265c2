"""Runs a notebook cell inside the sandbox (uploaded as /work/.joblet/run.py; standalone on purpose).

It defines the cell's `inputs` as variables, runs the cell as `__main__`, and writes the requested
`outputs` as JSON to /work/.joblet/outputs.json, where the agent picks them up after the job ends.
Values travel as JSON both ways: nothing is pickled.

As in a notebook, the value of a last-line expression and the figures left open (matplotlib) are
shown: their text/plain and text/html representations and PNGs go to /work/.joblet/display.json,
which the agent filters as untrusted display data and turns into `result` / `display` events.
A traceback names the cell's lines (the client numbers them as the notebook shows them) and
quotes them; `input()` says that a job has no stdin.
"""

import ast
import base64
import builtins
import io
import json
import linecache
import os
import sys
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
FILENAME = "<cell>"
MAX_REPR_CHARS = 1 << 20       # one representation; a longer one is cut, and says so
MAX_FIGURES = 20


def _load(name, default):
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _no_input(prompt=""):
    raise EOFError("input() cannot read: a joblet job's stdin is not connected; give the cell its "
                   "values with --in NAME (a notebook variable), --env K=V or --upload FILE")


def _compile(source):
    """The cell's statements, and its last line as an expression when it is one (shown after)."""
    tree = ast.parse(source, FILENAME, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, FILENAME, "exec")
    return body, (compile(last, FILENAME, "eval") if last is not None else None)


def _text(value):
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_REPR_CHARS:
        text = text[:MAX_REPR_CHARS] + "\n[joblet] ... cut at %d characters" % MAX_REPR_CHARS
    return text


def _bundle(value):
    """text/plain and, where the object has one, text/html (a DataFrame's table)."""
    data = {"text/plain": _text(repr(value))}
    html = getattr(value, "_repr_html_", None)
    if callable(html) and not isinstance(value, type):
        try:
            rendered = html()
            if isinstance(rendered, str):
                data["text/html"] = _text(rendered)
        except Exception:  # noqa: BLE001 - a broken _repr_html_ leaves the text
            pass
    return data


def _figures():
    """PNGs of the matplotlib figures still open, as `plt.show()` in a notebook would show them."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    shown = []
    for num in plt.get_fignums()[:MAX_FIGURES]:
        fig = plt.figure(num)
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png", bbox_inches="tight")
        except Exception:  # noqa: BLE001 - one figure that cannot draw does not hide the others
            continue
        shown.append({"text/plain": "<Figure %d>" % num,
                      "image/png": base64.b64encode(buf.getvalue()).decode("ascii")})
        plt.close(fig)
    return shown


def _write(name, data):
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        json.dump(data, f)


def _run(source, namespace):
    """Runs the cell; returns the last expression's display bundle (or None)."""
    body, last = _compile(source)
    exec(body, namespace)
    if last is None:
        return None
    value = eval(last, namespace)
    return None if value is None else _bundle(value)


def _display(result):
    figures = _figures()
    if result is not None or figures:
        _write("display.json", {"result": result, "display": figures})


def _outputs(spec, namespace):
    wanted = spec.get("outputs", [])
    if not wanted:
        return
    values, missing, bad = {}, [], {}
    for name in wanted:
        if name not in namespace:
            missing.append(name)
            continue
        try:
            json.dumps(namespace[name])
            values[name] = namespace[name]
        except (TypeError, ValueError) as exc:
            bad[name] = "%s is not JSON-serialisable: %s" % (type(namespace[name]).__name__, exc)
    _write("outputs.json", {"values": values, "missing": missing, "errors": bad})


def _print_traceback(etype, value, tb):
    """The traceback of the user's code: the runner's own frames (and ast's, for a syntax error)
    are left out, so it reads like the same error in a notebook."""
    if isinstance(value, SyntaxError) and value.filename == FILENAME:
        tb = None
    error = traceback.TracebackException(etype, value, tb)
    error.stack = traceback.StackSummary.from_list([f for f in error.stack if f.filename != __file__])
    sys.stderr.write("".join(error.format()))


def main():
    # line by line, so a notebook sees output as it comes, without one event per print() piece
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
    builtins.input = _no_input
    spec = _load("cell.json", {})
    namespace = {"__name__": "__main__", "__file__": FILENAME}
    namespace.update(_load("inputs.json", {}))
    with open(os.path.join(HERE, "cell.py"), encoding="utf-8") as f:
        source = f.read()
    linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
    sys.argv = [FILENAME]
    sys.path.insert(0, os.getcwd())
    result = None
    try:
        result = _run(source, namespace)
    except SystemExit:
        raise
    except BaseException:
        _print_traceback(*sys.exc_info())
        sys.exit(1)
    finally:
        sys.stdout.flush()
        try:
            _display(result)
        except Exception as exc:  # noqa: BLE001 - showing figures never hides the cell's outcome
            print("[joblet] could not save the cell's figures: %s" % exc, file=sys.stderr)
    _outputs(spec, namespace)


if __name__ == "__main__":
    main()

"""The session runner: one Python namespace in a sandbox, driven by framed messages.

Run by the sandbox's own python3 (any runtime's, or the base system's; Python 3.9 or later, the
standard library only). It speaks NDJSON over its own stdin (requests: `execute`, `complete`) and
its original stdout (replies), and moves both to private close-on-exec descriptors at start. Then
fd 0 is /dev/null, and fds 1 and 2 are pipes it reads itself: what a cell prints, and what the
processes it starts print, is captured at the descriptor level and streamed as `stdout`/`stderr`
frames while the cell runs. Nothing here trusts the agent less or more than the cell's own code:
the agent treats every frame as hostile data.

Frames out: ready, cell_start, stdout, stderr, display, result, error, cell_end, completion.
SIGINT raises KeyboardInterrupt in a running cell only; between cells it is ignored. The modules
that import much (ast, traceback, linecache, base64) are imported when a cell needs them.
"""

import _ast
import binascii
import builtins
import codecs
import fcntl
import io
import json
import os
import select
import signal
import sys
import threading
import types

PROTOCOL = 1
PRIVATE_FD_MIN = 20
READ_CHUNK = 65536
OUT = {"fd": -1}                    # the private reply channel
WRITE_LOCK = threading.Lock()
HELD = []                           # frames that go out with the next one sent
STATE = {"cell": 0, "running": False, "sending": 0, "pending": False, "pump": None}  # sending: depth


class Deferred:
    """While the main thread writes a frame, or reads the cell's pipes, an interrupt waits (a torn
    frame would break the channel; output read and dropped would be lost) and is raised after.
    Only the main thread defers: signals are handled there, and a thread of the cell that calls
    display() must neither swallow an interrupt nor end the main thread's deferral early."""

    def __enter__(self):
        self.main = threading.current_thread() is threading.main_thread()
        if self.main:  # another thread writes nothing here: a += of its own could undo the main's
            STATE["sending"] += 1

    def __exit__(self, *exc):
        if self.main:
            STATE["sending"] -= 1


def send(frame=None, hold=False):
    """One reply frame, whole, whatever thread sends it. A held frame waits for the next one that
    is sent, and both go out in one write (a cell's last output and its end reach the agent
    together); `send()` writes the held ones alone."""
    data = b"" if frame is None else \
        (json.dumps(frame, separators=(",", ":"), default=str) + "\n").encode("utf-8", "replace")
    with Deferred(), WRITE_LOCK:
        if hold:
            HELD.append(data)
            return
        view, HELD[:] = memoryview(b"".join(HELD) + data), []
        while view:
            view = view[os.write(OUT["fd"], view):]
    if STATE["pending"] and STATE["running"] and not STATE["sending"] \
            and threading.current_thread() is threading.main_thread():
        STATE["pending"] = False
        raise KeyboardInterrupt


def on_sigint(_signum, _frame):
    """KeyboardInterrupt in the running cell; nothing between cells or inside a frame write."""
    if STATE["running"] and STATE["sending"]:
        STATE["pending"] = True
    elif STATE["running"]:
        raise KeyboardInterrupt


def sync_output():
    """Everything the cell wrote so far is read from its pipes, to go out with (and before) the
    next frame sent, so a cell's result and end never overtake its own output."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if STATE["pump"] is not None:
        STATE["pump"].drain()


class Pump(threading.Thread):
    """Reads the cell's stdout/stderr pipes and sends what comes as frames of the current cell,
    while the cell runs. `drain()`, on the main thread, reads what is left in the pipes and holds
    it for the frame that comes next (no hand-over to this thread and back at a cell's end)."""

    def __init__(self, streams):
        super().__init__(name="joblet-pump", daemon=True)
        self.streams = streams                     # read fd -> "stdout" | "stderr"
        self.decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in streams}
        for fd in streams:
            os.set_blocking(fd, False)
            fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        self.reading = threading.Lock()            # one reader of the pipes at a time

    def run(self):
        fds = list(self.streams)
        while True:
            for fd in select.select(fds, [], [])[0]:
                with self.reading:
                    self._read(fd, limit=1, hold=False)

    def _read(self, fd, limit, hold):
        for _ in range(limit):
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            text = self.decoders[fd].decode(data)
            if text:
                send({"type": self.streams[fd], "cell": STATE["cell"], "data": text}, hold=hold)
            if len(data) < READ_CHUNK:
                return

    def drain(self):
        """Whatever thread calls it (the main one: an interrupt waits meanwhile, see Deferred)."""
        with Deferred(), self.reading:
            for fd in self.streams:
                self._read(fd, limit=64, hold=True)


def take_over_stdio():
    """Private copies of the protocol channels; fd 0 becomes /dev/null, fds 1 and 2 pipes."""
    proto_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, PRIVATE_FD_MIN)
    OUT["fd"] = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, PRIVATE_FD_MIN)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    streams = {}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        r, w = os.pipe()
        os.dup2(w, fd)
        os.close(w)
        streams[r] = name
    # line by line whatever PYTHONUNBUFFERED says: one frame per line, not one per write()
    sys.stdout = sys.__stdout__ = _line_stream(1)
    sys.stderr = sys.__stderr__ = _line_stream(2)
    return os.fdopen(proto_in, "rb"), streams


def _line_stream(fd):
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", errors="backslashreplace",
                            line_buffering=True)


# ---- rich output: the IPython display protocol, with or without IPython ----------------------

REPR_METHODS = (("text/html", "_repr_html_"), ("text/markdown", "_repr_markdown_"),
                ("text/latex", "_repr_latex_"), ("image/png", "_repr_png_"), ("image/jpeg", "_repr_jpeg_"),
                ("image/svg+xml", "_repr_svg_"), ("application/json", "_repr_json_"),
                ("application/javascript", "_repr_javascript_"), ("application/pdf", "_repr_pdf_"))
FORMATTER = {"ipython": None, "tried": False}
SHOWN = set()                   # figures displayed in this cell: not shown again at its end


def _figure_png(obj):
    """A matplotlib figure as PNG bytes (what matplotlib-inline shows), or None for anything else."""
    figure = sys.modules.get("matplotlib.figure")
    if figure is None or not isinstance(obj, figure.Figure):
        return None
    buf = io.BytesIO()
    obj.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _ipython_formatter():
    """IPython's DisplayFormatter where the runtime has IPython, imported on first use only."""
    if not FORMATTER["tried"]:
        FORMATTER["tried"] = True
        try:
            import importlib.util
            if importlib.util.find_spec("IPython") is not None:
                from IPython.core.formatters import DisplayFormatter
                fmt = DisplayFormatter()
                fmt.formatters["image/png"].for_type_by_name("matplotlib.figure", "Figure", _figure_png)
                FORMATTER["ipython"] = fmt
        except Exception:  # noqa: BLE001 - a broken IPython: the protocol below still works
            FORMATTER["ipython"] = None
    return FORMATTER["ipython"]


def _encode(mime, value):
    if isinstance(value, bytes) and mime.startswith("image/"):
        return binascii.b2a_base64(value, newline=False).decode("ascii")
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _protocol_bundle(obj):
    if isinstance(obj, type):  # a class: its repr, not its methods' output
        return {}
    method = getattr(obj, "_repr_mimebundle_", None)
    got = method(include=None, exclude=None) if callable(method) else None
    got = got[0] if isinstance(got, tuple) else got
    data = dict(got) if isinstance(got, dict) else {}
    for mime, name in REPR_METHODS:
        method = getattr(obj, name, None)
        value = method() if mime not in data and callable(method) else None
        value = value[0] if isinstance(value, tuple) else value
        if value is not None:
            data[mime] = value
    png = _figure_png(obj)
    if png is not None:
        data["image/png"] = png
    return data


def format_bundle(obj):
    """The mime bundle Jupyter would show for obj (a figure shown so is not shown again at the
    cell's end)."""
    figure = sys.modules.get("matplotlib.figure")
    if figure is not None and isinstance(obj, figure.Figure):
        SHOWN.add(id(obj))
    fmt = _ipython_formatter()
    if fmt is not None:
        data = fmt.format(obj)[0]
    else:
        data = _protocol_bundle(obj)
        if "text/plain" not in data:
            data["text/plain"] = _plain(obj)
    return {mime: _encode(mime, value) for mime, value in data.items()}


def _plain(obj):
    text = repr(obj)
    if len(text) > 78 and isinstance(obj, (dict, list, tuple, set)):
        import pprint
        return pprint.pformat(obj)
    return text


def display(*objs, raw=False, **_ignored):
    """Show objects in the notebook, as IPython's display() does."""
    if not objs:
        return
    sync_output()
    for obj in objs:
        data = obj if raw and isinstance(obj, dict) else format_bundle(obj)
        send({"type": "display", "cell": STATE["cell"], "data": data})


def show_figures(*_args, **_kwargs):
    """plt.show(), and the end of every cell: each open figure once, as PNG, then closed."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    for num in pyplot.get_fignums():
        fig = pyplot.figure(num)
        if id(fig) not in SHOWN:
            display(fig)
    pyplot.close("all")
    SHOWN.clear()


class AfterImport:
    """Patches modules right after they are first imported: pyplot's show() draws inline, and
    IPython's display() (where the runtime has IPython) sends display frames."""

    PATCHES = {"matplotlib": lambda m: m.use("agg"),   # off-screen, whatever the environment says
               "matplotlib.pyplot": lambda m: setattr(m, "show", show_figures),
               "IPython.core.display_functions": lambda m: setattr(m, "display", display),
               "linecache": lambda m: share_sources(m)}

    def find_spec(self, name, path=None, target=None):
        if name not in self.PATCHES:
            return None
        import importlib.machinery
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        patch = self.PATCHES[name]
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            patch(module)
        spec.loader.exec_module = exec_module
        return spec


# ---- cells --------------------------------------------------------------------------------

CO_COROUTINE = 0x0080
NAMESPACE = {}
CELL_SOURCES = {}               # "<cell N>" -> a linecache entry, so tracebacks show the cell's lines


def share_sources(linecache):
    """Cells' sources into linecache (once it is imported, by the runner or by a cell)."""
    linecache.cache.update(CELL_SOURCES)


class StdinNotConnected(EOFError):
    """input() in a session: there is no terminal behind the cell."""


def no_input(prompt=""):
    raise StdinNotConnected("input(): stdin is not connected in a joblet session; set the value in "
                            "a cell, or send it from the notebook with --in")


def compile_cell(code, cell):
    """The cell's statements, and its last expression separately (its value is the result)."""
    filename = "<cell %d>" % cell
    CELL_SOURCES[filename] = (len(code), None, code.splitlines(True), filename)
    if "linecache" in sys.modules:
        share_sources(sys.modules["linecache"])
    flags = _ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = compile(code, filename, "exec", flags | _ast.PyCF_ONLY_AST)
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = _ast.Expression(tree.body.pop().value)
    body = compile(tree, filename, "exec", flags)
    return body, (compile(last, filename, "eval", flags) if last is not None else None)


def _run(code):
    value = eval(code, NAMESPACE)
    if code.co_flags & CO_COROUTINE:
        import asyncio
        loop = STATE.get("loop") or asyncio.new_event_loop()
        STATE["loop"] = loop
        value = loop.run_until_complete(value)
    return value


def _error_frame(cell, exc):
    """The error as Jupyter shows it: the cell's frames, none of the runner's."""
    import traceback
    share_sources(__import__("linecache"))
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != __file__])
    lines = list(te.format_exception_only()) if isinstance(exc, SyntaxError) else list(te.format())
    return {"type": "error", "cell": cell, "ename": type(exc).__name__, "evalue": str(exc),
            "traceback": lines}


def _outputs(names):
    values, missing, errors = {}, [], {}
    for name in names:
        if name not in NAMESPACE:
            missing.append(name)
            continue
        try:
            json.dumps(NAMESPACE[name])
            values[name] = NAMESPACE[name]
        except (TypeError, ValueError) as exc:
            errors[name] = "%s is not JSON-serialisable: %s" % (type(NAMESPACE[name]).__name__, exc)
    return values, missing, errors


def execute(req):
    """Run one cell: its output streams, its display calls, its result or error, its end."""
    cell = int(req.get("cell") or STATE["cell"] + 1)
    STATE["cell"], STATE["pending"] = cell, False
    send({"type": "cell_start", "cell": cell})
    status = "ok"
    try:
        STATE["running"] = True
        NAMESPACE.update(req.get("inputs") or {})
        body, last = compile_cell(req.get("code", ""), cell)
        _run(body)
        value = _run(last) if last is not None else None
        if value is not None:
            NAMESPACE["_"] = value
            data = format_bundle(value)
            sync_output()
            send({"type": "result", "cell": cell, "data": data})
        show_figures()
    except KeyboardInterrupt as exc:
        status = "interrupted"
        _end_cell_error(cell, exc)
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: the session goes on, as in IPython
        status = "error"
        _end_cell_error(cell, exc)
    finally:
        STATE["running"] = False
    sync_output()
    end = {"type": "cell_end", "cell": cell, "status": status}
    if status == "ok" and req.get("outputs"):
        end["outputs"], end["missing"], end["errors"] = _outputs(req["outputs"])
    send(end)


def _end_cell_error(cell, exc):
    STATE["running"] = False
    try:
        show_figures()
    except Exception:  # noqa: BLE001 - figures of a failed cell are best effort
        pass
    sync_output()
    send(_error_frame(cell, exc))


# ---- completion ---------------------------------------------------------------------------

MAX_MATCHES = 1000


def complete(req):
    """Names in the namespace for code[:cursor_pos]: jedi where the runtime has it, else rlcompleter."""
    code = str(req.get("code", ""))
    pos = max(0, min(int(req.get("cursor_pos", len(code))), len(code)))
    reply = {"type": "completion", "id": req.get("id"), "matches": [], "cursor_start": pos, "cursor_end": pos}
    try:
        matches, start = _jedi(code, pos)
    except Exception:  # noqa: BLE001 - no jedi, or jedi failed: the standard library's completer
        matches, start = _rlcomplete(code, pos)
    reply["matches"], reply["cursor_start"] = matches[:MAX_MATCHES], start
    return reply


def _jedi(code, pos):
    import jedi
    before = code[:pos]
    line = before.count("\n") + 1
    column = len(before) - before.rfind("\n") - 1
    found = jedi.Interpreter(code, [NAMESPACE]).complete(line, column)
    typed = len(found[0].name) - len(found[0].complete) if found else 0
    return [c.name_with_symbols for c in found], pos - typed


def _rlcomplete(code, pos):
    import re
    import rlcompleter
    token = re.search(r"[A-Za-z_][\w.]*$|$", code[:pos]).group()
    completer = rlcompleter.Completer(NAMESPACE)
    matches = []
    for state in range(MAX_MATCHES):
        match = completer.complete(token, state)
        if match is None:
            break
        matches.append(match[:-2] if match.endswith("()") else match[:-1] if match.endswith("(") else match)
    return matches, pos - len(token)


# ---- the loop -----------------------------------------------------------------------------

def prepare_namespace():
    """One namespace for every cell, as `__main__` (so pickle finds classes defined in cells)."""
    global NAMESPACE
    main = types.ModuleType("__main__")
    main.__dict__.update({"__builtins__": builtins, "display": display})
    sys.modules["__main__"] = main
    NAMESPACE = main.__dict__
    builtins.input = no_input
    sys.argv = [""]
    sys.path.insert(0, os.getcwd())


def serve(requests):
    while True:
        line = requests.readline()
        if not line:
            return
        try:
            req = json.loads(line)
        except ValueError:
            send({"type": "protocol_error", "message": "a request that is not JSON"})
            continue
        op = req.get("op") if isinstance(req, dict) else None
        if op == "execute":
            execute(req)
        elif op == "complete":
            send(complete(req))
        else:
            send({"type": "protocol_error", "message": "unknown request %r" % (op,)})


def main():
    requests, streams = take_over_stdio()
    pump = Pump(streams)
    pump.start()
    STATE["pump"] = pump
    signal.signal(signal.SIGINT, on_sigint)
    sys.meta_path.insert(0, AfterImport())
    prepare_namespace()
    send({"type": "ready", "protocol": PROTOCOL, "pid": os.getpid(), "python": sys.version.split()[0]})
    try:
        serve(requests)
    finally:
        sync_output()
        send()
        os._exit(0)


if __name__ == "__main__":
    main()

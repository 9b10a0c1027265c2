"""The session runner on its own: a subprocess of plain python, spoken to as the agent speaks to it
(the frames of agent/sessions/protocol.py), no sandbox. What it promises the agent and the user:
one namespace, output captured at the descriptor level and in order, rich results by the display
protocol, interrupts in the running cell only, no stdin, completion, JSON in and out."""

from __future__ import annotations

import ast
import glob
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from joblet_agent.sessions import protocol

RUNNER = Path(protocol.__file__).with_name("runner.py")
BASE_PYTHON = "/usr/bin/python3"   # the base system's: no IPython, no matplotlib


class Runner:
    """One runner process and the frames it sends, read by a thread into a queue."""

    def __init__(self, python: str = sys.executable, cwd: str | None = None) -> None:
        self.proc = subprocess.Popen([python, str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=cwd, start_new_session=True)
        self.frames: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.cell = 0
        self.ready = self.next()
        assert self.ready["type"] == "ready", self.ready

    def _read(self) -> None:
        splitter = protocol.FrameSplitter()
        assert self.proc.stdout is not None
        while data := os.read(self.proc.stdout.fileno(), 65536):
            for frame in splitter.feed(data):
                self.frames.put(frame)
        self.frames.put(None)

    def next(self, timeout: float = 60) -> dict[str, Any]:
        frame = self.frames.get(timeout=timeout)
        assert frame is not None, f"the runner ended: {self.stderr()}"
        return frame

    def stderr(self) -> str:
        self.proc.wait(timeout=10)
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode()

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def start(self, code: str, **kw: Any) -> int:
        self.cell += 1
        self.send(protocol.execute_request(self.cell, code, **kw))
        return self.cell

    def run(self, code: str, **kw: Any) -> list[dict[str, Any]]:
        """Frames of one cell, cell_start to cell_end."""
        self.start(code, **kw)
        return self.until_end()

    def until_end(self) -> list[dict[str, Any]]:
        frames = []
        while True:
            frames.append(self.next())
            if frames[-1]["type"] == "cell_end":
                return frames

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def runner(tmp_path):
    r = Runner(cwd=str(tmp_path))
    yield r
    r.close()


@pytest.fixture
def base_runner(tmp_path):
    r = Runner(BASE_PYTHON, cwd=str(tmp_path))
    yield r
    r.close()


def text(frames: list[dict[str, Any]], kind: str = "stdout") -> str:
    return "".join(f["data"] for f in frames if f["type"] == kind)


def of(frames: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == kind]


# ---- output ------------------------------------------------------------------------------------

def test_output_of_the_cell_and_its_subprocesses_is_captured_in_order_before_its_result(runner):
    frames = runner.run("import os, subprocess, sys\nprint('one')\nsubprocess.run(['echo', 'two'])\n"
                        "os.write(1, b'three\\n')\nsys.stderr.write('err\\n')\nos.system('echo four >&2')\n21 * 2")
    assert [f["type"] for f in frames][0] == "cell_start"
    assert text(frames) == "one\ntwo\nthree\n"
    assert text(frames, "stderr") == "err\nfour\n"
    kinds = [f["type"] for f in frames]
    assert kinds.index("result") > max(i for i, k in enumerate(kinds) if k in ("stdout", "stderr"))
    assert of(frames, "result")[0]["data"]["text/plain"] == "42"
    assert frames[-1] == {"type": "cell_end", "cell": 1, "status": "ok"}


def test_output_streams_while_the_cell_still_runs(runner):
    runner.start("import time\nprint('first', flush=True)\ntime.sleep(30)")
    assert runner.next()["type"] == "cell_start"
    first = runner.next(timeout=10)
    assert first == {"type": "stdout", "cell": 1, "data": "first\n"}
    os.kill(runner.proc.pid, signal.SIGINT)
    assert runner.until_end()[-1]["status"] == "interrupted"


def test_variables_live_across_cells(runner):
    runner.run("import math\nx = 20\ndef f(y):\n    return x + y")
    frames = runner.run("f(1) + math.floor(0.5)")
    assert of(frames, "result")[0]["data"]["text/plain"] == "21"


def test_a_statement_gives_no_result_and_none_gives_none(runner):
    assert not of(runner.run("x = 1"), "result")
    assert not of(runner.run("None"), "result")


def test_errors_carry_the_cells_traceback_and_not_the_runners(runner):
    frames = runner.run("def f():\n    return 1 / 0\nf()")
    error = of(frames, "error")[0]
    assert (error["ename"], error["evalue"]) == ("ZeroDivisionError", "division by zero")
    tb = "".join(error["traceback"])
    assert '<cell 1>", line 3' in tb and "return 1 / 0" in tb
    assert "runner.py" not in tb
    assert frames[-1]["status"] == "error"
    syntax = of(runner.run("x = (1"), "error")[0]
    assert syntax["ename"] == "SyntaxError" and "runner.py" not in "".join(syntax["traceback"])


def test_system_exit_fails_the_cell_but_the_session_goes_on(runner):
    runner.run("kept = 5")
    assert runner.run("import sys; sys.exit(3)")[-1]["status"] == "error"
    assert of(runner.run("kept"), "result")[0]["data"]["text/plain"] == "5"


def test_top_level_await_works(runner):
    frames = runner.run("import asyncio\nawait asyncio.sleep(0)\nawait asyncio.sleep(0, result=7)")
    assert of(frames, "result")[0]["data"]["text/plain"] == "7"


# ---- rich output -------------------------------------------------------------------------------

PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
RICH = f"""
import base64
class Html:
    def _repr_html_(self): return '<b>bold</b>'
    def __repr__(self): return 'Html()'
class Bundle:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {{'text/plain': 'bundle', 'text/markdown': '*md*'}}, {{}}
class Png:
    def _repr_png_(self): return base64.b64decode('{PNG_1PX}')
"""


@pytest.mark.parametrize("python", [BASE_PYTHON, sys.executable], ids=["no-ipython", "ipython"])
def test_results_and_display_calls_follow_the_display_protocol(python, tmp_path):
    r = Runner(python, cwd=str(tmp_path))
    try:
        r.run(RICH)
        assert of(r.run("Html()"), "result")[0]["data"] == {"text/html": "<b>bold</b>", "text/plain": "Html()"}
        assert of(r.run("Bundle()"), "result")[0]["data"]["text/markdown"] == "*md*"
        png = of(r.run("Png()"), "result")[0]["data"]
        assert png["image/png"] == PNG_1PX
        frames = r.run("print('before')\ndisplay(Html(), 3)\nprint('after')")
        shown = of(frames, "display")
        assert [d["data"].get("text/html") for d in shown] == ["<b>bold</b>", None]
        assert shown[1]["data"]["text/plain"] == "3"
        kinds = [f["type"] for f in frames]
        assert kinds[1:5] == ["stdout", "display", "display", "stdout"]
    finally:
        r.close()


def test_ipython_display_in_a_runtime_with_ipython_sends_display_frames(runner):
    frames = runner.run("from IPython.display import display as d, HTML\nd(HTML('<i>x</i>'))")
    assert of(frames, "display")[0]["data"]["text/html"] == "<i>x</i>"


@pytest.mark.parametrize("ipython", [True, False], ids=["ipython", "no-ipython"])
def test_matplotlib_figures_come_out_inline_as_png_once(runner, ipython):
    if not ipython:  # hide IPython from this runner: the stdlib display protocol takes over
        runner.run("import sys; sys.modules['IPython'] = None")
    frames = runner.run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n"
                        "fig, ax = plt.subplots()\nax.bar([1], [2])")
    pngs = [f["data"]["image/png"] for f in of(frames, "display")]
    assert len(pngs) == 2 and all(p.startswith("iVBORw0KGgo") for p in pngs)
    assert not of(runner.run("import matplotlib.pyplot as plt\nplt.get_fignums()"), "display")
    frames = runner.run("fig = plt.figure()\nplt.plot([0, 1])\nfig")
    assert of(frames, "result")[0]["data"]["image/png"].startswith("iVBORw0KGgo")
    assert not of(frames, "display"), "a figure shown as the result is not shown again"
    assert of(runner.run("import matplotlib\nmatplotlib.get_backend()"), "result")[0]["data"]["text/plain"] \
        .strip("'").lower() == "agg"


# ---- interrupts ----------------------------------------------------------------------------------

def test_interrupt_raises_keyboard_interrupt_in_the_running_cell_only(runner):
    runner.run("kept = 'still here'")
    os.kill(runner.proc.pid, signal.SIGINT)   # between cells: ignored
    runner.start("import time\nprint('go', flush=True)\nfor _ in range(600):\n    time.sleep(0.1)")
    assert runner.next()["type"] == "cell_start" and runner.next()["data"] == "go\n"
    os.kill(runner.proc.pid, signal.SIGINT)
    frames = runner.until_end()
    assert of(frames, "error")[0]["ename"] == "KeyboardInterrupt", frames
    assert frames[-1]["status"] == "interrupted", frames
    assert of(runner.run("kept"), "result")[0]["data"]["text/plain"] == "'still here'"


# ---- stdin, descriptors, inputs and outputs ------------------------------------------------------

# A thread of the cell stops inside display()'s read of the cell's pipes (the runner's own lock,
# wrapped by a gate), while the main thread spins: an interrupt must still reach the main thread.
THREAD_IN_DRAIN = """import threading
pump, release = display.__globals__["STATE"]["pump"], threading.Event()
real = pump.reading
class Gate:
    inside = threading.Event()
    def __enter__(self):
        if threading.current_thread().name == "drainer":
            self.inside.set()
            release.wait()
        real.acquire()
    def __exit__(self, *exc):
        real.release()
gate = pump.reading = Gate()
drainer = threading.Thread(target=display, args=("from a thread",), name="drainer")
drainer.start()
gate.inside.wait()
try:
    print("in drain", flush=True)
    while True:
        pass
finally:
    pump.reading = real
    release.set()
    drainer.join()
"""


def test_a_thread_reading_the_cells_output_does_not_hold_back_an_interrupt(runner):
    runner.start(THREAD_IN_DRAIN)
    assert runner.next()["type"] == "cell_start" and runner.next(timeout=10)["data"] == "in drain\n"
    os.kill(runner.proc.pid, signal.SIGINT)
    frames = runner.until_end()
    assert frames[-1]["status"] == "interrupted"
    assert of(frames, "error")[0]["ename"] == "KeyboardInterrupt"
    assert of(frames, "display")[0]["data"]["text/plain"] == "'from a thread'"
    assert of(runner.run("1 + 1"), "result")[0]["data"]["text/plain"] == "2"


def test_input_says_stdin_is_not_connected_and_stdin_is_dev_null(runner):
    error = of(runner.run("input('name? ')"), "error")[0]
    assert "stdin is not connected" in error["evalue"]
    frames = runner.run("import os, sys\nprint(repr(sys.stdin.read()), os.readlink('/proc/self/fd/0'))")
    assert text(frames) == "'' /dev/null\n"


def test_a_cells_subprocess_gets_only_0_1_2(runner):
    frames = runner.run("import subprocess\nsubprocess.run(['ls', '/proc/self/fd'], close_fds=False)")
    assert text(frames).split() == ["0", "1", "2", "3"]   # 3: ls's own listing of the folder


def test_inputs_and_outputs_travel_as_json(runner):
    frames = runner.run("y = [v * 2 for v in x]\nz = object()", inputs={"x": [1, 2]}, outputs=["y", "z", "w"])
    end = frames[-1]
    assert end["outputs"] == {"y": [2, 4]}
    assert end["missing"] == ["w"] and "not JSON-serialisable" in end["errors"]["z"]


# ---- completion ----------------------------------------------------------------------------------

@pytest.mark.parametrize("python", [BASE_PYTHON, sys.executable], ids=["rlcompleter", "jedi"])
def test_completion_answers_from_the_namespace(python, tmp_path):
    r = Runner(python, cwd=str(tmp_path))
    try:
        r.run("import os\nmy_variable = 1\nmy_other = 2")
        r.send(protocol.complete_request(9, "x = my_v", 8))
        reply = r.next()
        assert reply == {"type": "completion", "id": 9, "matches": ["my_variable"], "cursor_start": 4,
                         "cursor_end": 8}
        r.send(protocol.complete_request(10, "os.pa", 5))
        reply = r.next()
        assert "path" in [m.rsplit(".", 1)[-1] for m in reply["matches"]]
        assert "path" in [("os.pa"[:reply["cursor_start"]] + m).rsplit(".", 1)[-1] for m in reply["matches"]]
    finally:
        r.close()


# ---- the process ---------------------------------------------------------------------------------

def test_the_runner_ends_when_its_stdin_closes(runner):
    runner.run("x = 1")
    runner.close()
    assert runner.proc.returncode == 0


def test_os_exit_in_a_cell_ends_the_runner(runner):
    runner.start("import os; os._exit(7)")
    assert runner.next()["type"] == "cell_start"
    assert runner.frames.get(timeout=10) is None
    assert runner.proc.wait(timeout=10) == 7


def test_garbage_requests_get_a_protocol_error_and_the_runner_goes_on(runner):
    runner.send(b"not json\n")
    assert runner.next()["type"] == "protocol_error"
    runner.send(b'{"op": "nothing"}\n')
    assert runner.next()["type"] == "protocol_error"
    assert of(runner.run("1"), "result")


def test_the_runner_is_python_3_9_syntax_and_standard_library_only():
    source = RUNNER.read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    optional = {"IPython", "jedi"}   # used where the runtime has them, imported inside a try
    assert imported - optional <= set(sys.stdlib_module_names)


def _pythons() -> list[str]:
    """The base system's python3 and any other 3.9 or later this machine has (pyenv's, Debian's)."""
    found = {BASE_PYTHON}
    for path in glob.glob("/root/.pyenv/versions/3.*/bin/python3") + glob.glob("/usr/bin/python3.[0-9]*[0-9]"):
        version = re.search(r"(?:versions/|python)3\.(\d+)", path)
        if os.access(path, os.X_OK) and version and int(version.group(1)) >= 9:
            found.add(path)
    return sorted(found)


@pytest.mark.parametrize("python", _pythons())
def test_the_runner_runs_on_each_python_of_this_machine(python, tmp_path):
    r = Runner(python, cwd=str(tmp_path))
    try:
        frames = r.run("import subprocess\nsubprocess.run(['echo', 'sub'])\nx = {'a': 1}\nx")
        assert text(frames) == "sub\n"
        assert of(frames, "result")[0]["data"]["text/plain"] == "{'a': 1}"
    finally:
        r.close()

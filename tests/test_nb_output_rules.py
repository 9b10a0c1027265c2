"""The notebook side's output rules, without a kernel: batching by time and size, and the one-line
hints that name the option fixing a failure."""

from __future__ import annotations

import pytest

from joblet_nb.core.batching import OutputBatcher
from joblet_nb.core.hints import FailureContext, hint, last_error, suggest_option


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _batcher(**kw):
    written: list[tuple[str, str]] = []
    clock = Clock()
    b = OutputBatcher(lambda kind, pieces: written.append((kind, "".join(pieces))), clock=clock, **kw)
    return b, written, clock


def test_nothing_is_written_before_the_interval_or_the_size():
    b, written, clock = _batcher(interval=0.1, max_bytes=1000)
    for i in range(50):
        b.add("stdout", f"line {i}\n")
    assert written == [] and b.due_in() == pytest.approx(0.1)
    clock.now = 0.1
    b.tick()
    assert written == [("stdout", "".join(f"line {i}\n" for i in range(50)))]
    assert b.due_in() is None


def test_size_writes_at_once_and_at_a_line_end():
    b, written, clock = _batcher(interval=10, max_bytes=100)
    b.add("stdout", "x" * 60 + "\n" + "y" * 50)
    assert written == [("stdout", "x" * 60 + "\n")]
    b.add("stdout", "\n")
    b.flush()
    assert "".join(t for _, t in written) == "x" * 60 + "\n" + "y" * 50 + "\n"


def test_a_partial_line_waits_for_its_end_until_the_time_rule_frees_it():
    b, written, clock = _batcher(interval=0.1)
    b.add("stdout", "done\nEnter a value: ")
    clock.now = 0.1
    b.tick()
    assert written == [("stdout", "done\n")]
    clock.now = 0.2
    b.tick()
    assert written[-1] == ("stdout", "Enter a value: ")


def test_streams_keep_their_order():
    b, written, clock = _batcher()
    b.add("stdout", "a\n")
    b.add("stderr", "b\n")
    b.add("stdout", "c\n")
    b.flush()
    assert written == [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")]


def test_the_number_of_writes_is_bounded_by_the_rule():
    b, written, clock = _batcher(interval=0.1, max_bytes=64 * 1024)
    total = 0
    for i in range(200_000):          # 200,000 lines arriving over 2 s in 2,000 events
        if i % 100 == 0:
            clock.now += 0.001
            b.tick()
        line = f"{i}\n"
        total += len(line)
        b.add("stdout", line)
    b.flush()
    assert "".join(t for _, t in written) == "".join(f"{i}\n" for i in range(200_000))
    assert len(written) <= total // (64 * 1024) + 2.0 / 0.1 + 2


# ---- hints -------------------------------------------------------------------------------------

ML = {"name": "python-3.11-ml", "packages": ["numpy", "pandas", "matplotlib"]}


def _tb(line: str) -> str:
    return f'Traceback (most recent call last):\n  File "<cell>", line 2, in <module>\n{line}\n'


def test_the_last_exception_line_is_found():
    assert last_error(_tb("socket.gaierror: [Errno -3] Temporary failure")) == (
        "socket.gaierror", "[Errno -3] Temporary failure")
    assert last_error("no traceback here") is None


def test_a_missing_module_names_the_runtimes_that_have_it():
    text = hint(_tb("ModuleNotFoundError: No module named 'numpy'"), FailureContext(runtimes=[ML]))
    assert text == "hint: numpy is not in the base python3; runtime python-3.11-ml has it: -r python-3.11-ml"
    text = hint(_tb("ModuleNotFoundError: No module named 'torch'"), FailureContext(runtimes=[ML]))
    assert "nor in any runtime" in text


def test_a_missing_file_points_at_upload():
    text = hint(_tb("FileNotFoundError: [Errno 2] No such file or directory: 'data.csv'"), FailureContext())
    assert text == "hint: the sandbox's /work has only the files you send: --upload data.csv"


@pytest.mark.parametrize("line", [
    "socket.gaierror: [Errno -3] Temporary failure in name resolution",
    "urllib.error.URLError: <urlopen error [Errno -3] Temporary failure in name resolution>",
    "OSError: [Errno 101] Network is unreachable",
    "PermissionError: [Errno 13] Permission denied",  # a TCP connect or bind that Landlock refused
])
def test_a_network_error_points_at_the_bridge_only_without_a_network(line):
    assert "--network bridge" in hint(_tb(line), FailureContext())
    assert hint(_tb(line), FailureContext(network="bridge")) is None


def test_a_file_refused_is_not_a_network_error():
    assert hint(_tb("PermissionError: [Errno 13] Permission denied: '/usr/x'"), FailureContext()) is None


def test_a_name_from_an_earlier_sandboxed_cell_points_at_in_and_out():
    text = hint(_tb("NameError: name 'df' is not defined"), FailureContext(earlier={"df": "abc"}))
    assert "--out df" in text and "--in df" in text and "session" in text
    text = hint(_tb("NameError: name 'x' is not defined"), FailureContext(notebook_names=["x"]))
    assert "--in x" in text
    assert hint(_tb("NameError: name 'y' is not defined"), FailureContext()) is None


def test_a_mistyped_option_is_named():
    known = ["--max-memory", "--max-cpu", "--network", "--timeout", "-r", "--runtime"]
    assert suggest_option("--memory", known) == "--max-memory"
    assert suggest_option("--timeoutt", known) == "--timeout"
    assert suggest_option("--zzz", known) is None


def test_a_large_event_is_written_as_it_came_not_joined_and_cut_twice():
    b, _, clock = _batcher(interval=10, max_bytes=100)
    pieces: list[list[str]] = []
    b.write = lambda kind, parts: pieces.append(list(parts))
    big = "1\n" * 200 + "2"  # an event of a fast writer, its last line not ended yet
    b.add("stdout", "0")
    b.add("stdout", big)
    assert pieces == [["0", big[:-1]]]
    aligned = "3\n" * 100
    b.add("stdout", aligned)
    assert pieces[-1] == ["2", aligned] and pieces[-1][1] is aligned, "a piece ending at a line end is not copied"
    b.add("stdout", "tail without a line end " * 5)
    b.flush()
    assert "".join("".join(p) for p in pieces) == "0" + big + aligned + "tail without a line end " * 5

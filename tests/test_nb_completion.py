"""Tab completion of the magics in a real IPython shell: subcommands, options, choices, and
nothing of the host kernel inside a `%%joblet` cell."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell


@pytest.fixture
def shell():
    """The suite's one IPython shell (as `nb_shell` uses it), with the extension loaded."""
    import joblet_nb

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "joblet_nb")
    ip.user_ns["samples_in_kernel"] = [1, 2]
    yield ip
    ip.user_ns.pop("samples_in_kernel", None)
    joblet_nb._magics.completer.cell_completer = None


def _texts(ip, code: str, cursor: int | None = None) -> list[str]:
    from IPython.core.completer import provisionalcompleter

    with provisionalcompleter():
        return [c.text for c in ip.Completer.completions(code, len(code) if cursor is None else cursor)]


def test_options_of_run_complete_and_python_names_do_not(shell):
    found = _texts(shell, "%%joblet run --max-m")
    assert found == ["--max-memory"]
    assert "--max-cpu" in _texts(shell, "%%joblet run --max")
    assert "--max-memory" in _texts(shell, "%%joblet --max-m")  # `%%joblet --opt` means run


def test_subcommands_and_their_choices_complete(shell):
    assert _texts(shell, "%joblet runtime bu") == ["build"]
    assert "runtime" in _texts(shell, "%joblet ru") and "run" in _texts(shell, "%joblet ru")
    assert "--or-skip" in _texts(shell, "%joblet require x --or")
    assert _texts(shell, "x = 1\n%joblet sta") == ["status"]


def test_a_joblet_cell_body_gets_nothing_from_the_host_kernel(shell):
    code = "%%joblet run\nsamples_in"
    assert _texts(shell, code) in ([], ["samples_in"])
    assert "samples_in_kernel" in _texts(shell, "samples_in")  # an ordinary cell still does


def test_the_session_answers_for_a_session_cells_body_only(shell):
    import joblet_nb

    asked = []

    def session(body, line, col):
        asked.append((body, line, col))
        return ["sandbox_var"], "sand"

    joblet_nb._magics.completer.cell_completer = session
    assert _texts(shell, "%%joblet run --session\nx = 1\nsand") == ["sandbox_var"]
    assert asked == [("x = 1\nsand", 1, 4)]
    assert _texts(shell, "%%joblet run\nsand") in ([], ["sand"])   # a fresh sandbox has no session names
    assert len(asked) == 1

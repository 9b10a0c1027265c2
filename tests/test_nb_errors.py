"""Error paths: each one a single line that says what to do, never a traceback through requests."""

from __future__ import annotations

import socket

import pytest
from IPython.core.error import UsageError

from joblet_nb.core.errors import AgentUnavailable, AuthError, BadRequestError

pytestmark = pytest.mark.root


def _one_line(error: BaseException) -> str:
    lines = error._render_traceback_()
    assert len(lines) == 1, lines
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_agent_down_says_to_start_it_or_set_joblet_url(nb):
    nb.run(f"%config JobletMagics.url = 'http://127.0.0.1:{_closed_port()}'")
    cell = nb.run("%%joblet run\nprint(1)")
    assert isinstance(cell.error, AgentUnavailable)
    line = _one_line(cell.error)
    assert "joblet-agent serve" in line and "JOBLET_URL" in line
    assert "Traceback" not in cell.stdout


def test_bad_token_says_where_the_token_comes_from(nb, tmp_path):
    bad = tmp_path / "token"
    bad.write_text("not-a-real-token\n")
    nb.run(f"%config JobletMagics.token_file = {str(bad)!r}")
    cell = nb.run("%%joblet run\nprint(1)")
    assert isinstance(cell.error, AuthError)
    assert "JOBLET_TOKEN" in _one_line(cell.error)


def test_missing_token_file_is_a_usage_error(nb, tmp_path):
    nb.run(f"%config JobletMagics.token_file = {str(tmp_path / 'nope')!r}")
    cell = nb.run("%joblet jobs")
    assert isinstance(cell.error, UsageError) and "token file" in str(cell.error)


def test_no_token_anywhere_says_how_to_get_one(nb, tmp_path, monkeypatch):
    monkeypatch.delenv("JOBLET_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    nb.run("%config JobletMagics.token_file = ''")
    cell = nb.run("%joblet jobs")
    assert isinstance(cell.error, AuthError)
    line = _one_line(cell.error)
    assert "JOBLET_TOKEN" in line and "client.json" in line


def test_unknown_runtime_names_what_the_agent_has(nb):
    cell = nb.run("%%joblet run -r no-such-runtime\nprint(1)")
    assert isinstance(cell.error, BadRequestError)
    assert "no-such-runtime" in _one_line(cell.error)


def test_reserved_env_name_is_refused_naming_the_key(nb):
    cell = nb.run("%%joblet run --env JOBLET_ADMIN=1\nprint(1)")
    assert isinstance(cell.error, BadRequestError)
    assert "JOBLET_ADMIN" in _one_line(cell.error)


@pytest.mark.parametrize("options, expected", [
    ("--max-memory lots", "512M"),
    ("--timeout soon", "seconds"),
    ("--max-cpu fast", "percentage"),
    ("--env NOEQUALS", "NAME=value"),
    ("--upload /no/such/file", "no file"),
    ("--upload README:../escape", "relative path inside /work"),
    ("--in not_defined_anywhere", "no variable"),
    ("--bogus", "unrecognized"),
])
def test_bad_option_is_one_usage_line(nb, options, expected):
    cell = nb.run(f"%%joblet run {options}\nprint(1)")
    assert isinstance(cell.error, UsageError), cell.error
    assert expected in str(cell.error)
    assert "UsageError" in cell.stdout + cell.stderr and "Traceback" not in cell.stdout


def test_unknown_subcommand_lists_the_known_ones(nb):
    cell = nb.run("%joblet frobnicate")
    assert isinstance(cell.error, UsageError)
    assert "run" in str(cell.error) and "attach" in str(cell.error)


def test_cell_body_on_a_line_subcommand_is_refused(nb):
    cell = nb.run("%%joblet jobs\nprint(1)")
    assert isinstance(cell.error, UsageError)


def test_tokens_are_never_magic_arguments(nb):
    cell = nb.run("%%joblet run --token abc\nprint(1)")
    assert isinstance(cell.error, UsageError)

"""The notebook side's pure parts: option parsing, config resolution, tables, widget fallbacks."""

from __future__ import annotations

import base64
import json

import pytest

from waiting import wait_until

from joblet_nb.core import config
from joblet_nb.ipython.display import jobs_table, record_table, runtimes_table
from joblet_nb.core.errors import JobFailed
from joblet_nb.core.events import parse_event
from joblet_nb.core.records import JobLimits, JobRecord, RuntimeInfo
from joblet_nb.core.request import OptionError, collect_inputs, limits_from, parse_env, parse_seconds, parse_size_mb, read_upload

# ---- sizes, times, env, uploads, inputs ------------------------------------------------------


@pytest.mark.parametrize("text, mb", [("512M", 512), ("1G", 1024), ("256", 256), ("100K", 1),
                                      ("1.5G", 1536), ("64MB", 64), ("2GiB", 2048)])
def test_sizes_take_units_and_bare_numbers_are_megabytes(text, mb):
    assert parse_size_mb(text) == mb


@pytest.mark.parametrize("text, seconds", [("30", 30), ("5m", 300), ("1h", 3600), ("0.5", 1)])
def test_times_are_seconds_or_have_a_unit(text, seconds):
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["", "lots", "-1G", "1X"])
def test_bad_sizes_say_the_right_form(bad):
    with pytest.raises(OptionError, match="512M"):
        parse_size_mb(bad, "--max-memory")


def test_limits_leave_out_what_is_not_given():
    assert limits_from(max_memory="1G", timeout="1m") == JobLimits(memory_mb=1024, timeout_s=60)
    assert limits_from() == JobLimits()
    assert limits_from(max_io="1M").io_bps == 1 << 20


def test_env_pairs():
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(OptionError):
        parse_env(["1A=1"])


def test_upload_keeps_mode_and_refuses_escaping_paths(tmp_path):
    f = tmp_path / "run.sh"
    f.write_bytes(b"#!/bin/sh\n")
    f.chmod(0o755)
    up = read_upload(str(f)).to_json()
    assert up == {"path": "run.sh", "content_b64": base64.b64encode(b"#!/bin/sh\n").decode(),
                  "mode": 0o755}
    assert read_upload(f"{f}:bin/x.sh").path == "bin/x.sh"
    for dest in ("/etc/x", "../x", "a/../../x"):
        with pytest.raises(OptionError, match="relative path"):
            read_upload(f"{f}:{dest}")


def test_inputs_must_be_json_and_their_sizes_are_stated():
    values, sizes = collect_inputs(["a", "b"], {"a": [1, 2], "b": {"k": None}})
    assert values == {"a": [1, 2], "b": {"k": None}}
    assert sizes == ["a (list, 6 B JSON)", "b (dict, 11 B JSON)"]
    with pytest.raises(OptionError, match="not JSON"):
        collect_inputs(["s"], {"s": {1, 2}})
    with pytest.raises(OptionError, match="no variable"):
        collect_inputs(["missing"], {})


# ---- where URL and tokens come from ----------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("JOBLET_URL", "JOBLET_TOKEN", "JOBLET_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def _write_client_config(base, url="http://127.0.0.1:1234", token="file-token", admin="file-admin"):
    d = base / "joblet"
    d.mkdir(parents=True)
    (d / "client.json").write_text(json.dumps({"url": url, "token": token}))
    (d / "admin-token").write_text(admin + "\n")


def test_client_config_written_by_the_agent_is_read(clean_env):
    _write_client_config(clean_env / "xdg")
    s = config.resolve()
    assert (s.url, s.token, s.admin_token) == ("http://127.0.0.1:1234", "file-token", "file-admin")


def test_home_config_is_read_when_xdg_has_none(clean_env):
    _write_client_config(clean_env / "home" / ".config")
    assert config.resolve().token == "file-token"


def test_environment_comes_before_the_config_file(clean_env, monkeypatch):
    _write_client_config(clean_env / "xdg")
    monkeypatch.setenv("JOBLET_URL", "http://agent:7755/")
    monkeypatch.setenv("JOBLET_TOKEN", "env-token")
    monkeypatch.setenv("JOBLET_ADMIN_TOKEN", "env-admin")
    s = config.resolve()
    assert (s.url, s.token, s.admin_token) == ("http://agent:7755", "env-token", "env-admin")
    assert s.source == "JOBLET_TOKEN"


def test_explicit_settings_of_the_session_come_first(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("JOBLET_TOKEN", "env-token")
    tf = tmp_path / "tok"
    tf.write_text("\n  file-token-2  \n")
    s = config.resolve(url="http://x:1", token_file=str(tf))
    assert (s.url, s.token) == ("http://x:1", "file-token-2")


def test_no_config_at_all_means_the_default_url_and_no_token(clean_env):
    s = config.resolve()
    assert s.url == config.DEFAULT_URL and s.token is None and s.admin_token is None


def test_mask_never_shows_a_usable_token():
    token = "jnb_abcdefghijklmnopqrstuvwxyz"
    masked = config.mask(token)
    assert masked.endswith("wxyz") and "abcdefghijklmnop" not in masked
    assert config.mask(None) == "(none)" and config.mask("short") == "*****"


# ---- tables and error rendering --------------------------------------------------------------

RECORD_JSON = {"id": "00112233aabbccdd", "type": "standard", "owner": "u", "status": "FAILED",
          "exit_code": None, "signal": 9, "reason": "oom", "message": "used more than 32 MB",
          "runtime": None, "limits": {"memory_mb": 32}, "network": "none",
          "created_at": 1_700_000_000.0, "started_at": 1_700_000_000.5,
          "ended_at": 1_700_000_002.0, "usage": {"cpu_s": 0.25, "memory_peak_bytes": 33554432}}
RECORD = JobRecord.from_json(RECORD_JSON)


def test_tables_have_html_and_text():
    for table in (jobs_table([RECORD]), record_table(RECORD), runtimes_table([RuntimeInfo("py")])):
        assert "<table" in table._repr_html_()
        assert "<" not in repr(table).replace("<=", "")
    text = repr(jobs_table([RECORD]))
    assert "00112233aabbccdd" in text and "oom" in text and "1.5s" in text and "32.0 MiB" in text
    assert "&lt;b&gt;" in jobs_table([JobRecord.from_json({**RECORD_JSON, "id": "<b>"})])._repr_html_()


def test_runtime_list_says_when_each_runtime_was_built():
    table = runtimes_table([RuntimeInfo("py", built="0123abcd", extra={"built_at": 1796166247.8})])
    row = dict(zip(table.header, table.rows[0]))
    assert row["built"].startswith("2026-") and row["build"] == "0123abcd"


def test_job_failed_renders_reason_and_stderr_tail():
    err = JobFailed(RECORD, "".join(f"line {i}\n" for i in range(50)), tail_lines=5)
    lines = err._render_traceback_()
    assert "reason=oom" in lines[0] and "signal=9" in lines[0] and "32 MB" in lines[0]
    assert lines[-5:] == [f"line {i}" for i in range(45, 50)]


def test_exit_failures_suggest_nothing_and_limits_suggest_the_option():
    timeout = JobFailed(JobRecord.from_json({**RECORD_JSON, "reason": "timeout", "message": None}))
    assert "--timeout" in timeout.summary()


# ---- widgets and their fallbacks -------------------------------------------------------------


def test_status_line_shows_state_elapsed_and_usage_in_every_mimetype():
    from joblet_nb.ipython.widgets import StatusLine

    status = StatusLine("00112233aabbccdd")
    bundle = status._repr_mimebundle_()
    assert "PENDING" in bundle["text/plain"] and "PENDING" in bundle["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    status.on_event(parse_event({"seq": 1, "type": "status", "status": "RUNNING"}))
    assert "RUNNING" in status.value
    status.update(RECORD)
    text = status._repr_mimebundle_()["text/plain"]
    assert "FAILED" in text and "elapsed=1.5s" in text and "cpu 0.25s" in text
    assert "mem peak 32.0 MiB" in text


def test_build_progress_follows_progress_events():
    from joblet_nb.ipython.widgets import BuildProgress

    bar = BuildProgress("python-3.11")
    bar.on_event(parse_event({"seq": 4, "type": "progress", "phase": "install", "step": 3, "steps": 7,
                              "message": "pip install numpy"}))
    assert (bar.bar.value, bar.bar.max) == (3, 7)
    assert "step 3/7 install: pip install numpy" in bar._repr_mimebundle_()["text/plain"]
    bar.on_event(parse_event({"seq": 5, "type": "stdout", "data": "Collecting numpy\nDownloading numpy.whl\n"}))
    text = bar._repr_mimebundle_()["text/plain"]
    assert "step 3/7 install" in text and "Downloading numpy.whl" in text and "s" in text.split("numpy ")[-1]
    turns = bar._turns
    wait_until(lambda: bar._turns > turns)  # the spinner turns while the log is quiet
    bar.on_event(parse_event({"seq": 9, "type": "exit", "status": "COMPLETED"}))
    assert bar.bar.value == 7 and "[COMPLETED]" in bar._repr_mimebundle_()["text/html"]


def test_extension_loads_and_unloads():
    from IPython.core.interactiveshell import InteractiveShell

    import joblet_nb

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "joblet_nb")
    assert shell.find_magic("joblet") is not None
    assert joblet_nb._magics in shell.configurables
    shell.run_line_magic("unload_ext", "joblet_nb")
    assert shell.find_magic("joblet") is None
    shell.run_line_magic("load_ext", "joblet_nb")
    assert shell.find_cell_magic("joblet") is not None


def test_globs_cross_folders_and_skip_hidden_names_unless_they_name_the_dot():
    from joblet_nb.ipython.artifacts import _matches

    assert _matches("plots/a.png", "*.png") and _matches("a.png", "*.png")
    assert not _matches(".joblet/cell.py", "*") and not _matches("out/.hidden.csv", "out/*.csv")
    assert _matches(".joblet/cell.py", ".joblet/*") and _matches("out/.h.csv", "out/.*")

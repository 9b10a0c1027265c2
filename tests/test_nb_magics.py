"""`%%joblet run` and every `%joblet` line magic, in an IPython shell, against the real agent."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from joblet_nb.core.errors import BadRequestError, JobFailed, NotFoundError, OutputsMissing, RuntimeMissing
from nbshell import PNG_SCRIPT, wait_ended
from waiting import wait_until

pytestmark = pytest.mark.root

# ---- %%joblet run: output and failure --------------------------------------------------------


def test_print_hi_lands_in_the_cell(nb):
    cell = nb.run("%%joblet run\nprint('hi')")
    assert cell.error is None, cell.stdout
    assert cell.stdout == "hi\n"
    assert nb.magics.last_result.record.status == "COMPLETED"


def test_stdout_and_stderr_go_to_their_streams(nb):
    cell = nb.run("%%joblet run\nimport sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert cell.stdout == "out\n"
    assert "err\n" in cell.stderr


def test_percent_percent_joblet_without_subcommand_means_run(nb):
    cell = nb.run("%%joblet --max-memory 64M\nprint('implicit run')")
    assert cell.error is None and cell.stdout == "implicit run\n"
    assert nb.magics.last_result.record.limits.memory_mb == 64


def test_failing_cell_fails_with_reason_and_one_traceback(nb):
    cell = nb.run("%%joblet run\nprint('before')\n1/0")
    assert isinstance(cell.error, JobFailed)
    err = cell.error
    assert err.reason == "exit" and err.exit_code == 1
    assert "ZeroDivisionError" in err.stderr_tail
    rendered = "\n".join(err._render_traceback_())
    assert "FAILED" in rendered and "exit_code=1" in rendered
    assert "ZeroDivisionError" not in rendered, "the traceback is in the cell once, as it streamed"
    assert cell.stderr.count("Traceback") == 1 and 'File "<cell>", line 3' in cell.stderr  # as the cell shows it
    assert "before\n" in cell.stdout  # output streamed before the failure is kept


def test_allow_error_reports_without_failing_the_cell(nb):
    cell = nb.run("%%joblet run --allow-error\nraise SystemExit(3)")
    assert cell.error is None
    assert "FAILED" in cell.stdout and "exit_code=3" in cell.stdout


def test_raise_on_error_false_is_a_session_setting(nb):
    nb.run("%config JobletMagics.raise_on_error = False")
    cell = nb.run("%%joblet run\nraise SystemExit(4)")
    assert cell.error is None and "exit_code=4" in cell.stdout


def test_stream_output_false_still_shows_all_output(nb):
    nb.run("%config JobletMagics.stream_output = False")
    cell = nb.run("%%joblet run\nfor i in range(3): print(i)")
    assert cell.stdout == "0\n1\n2\n"


def test_line_form_runs_a_command(nb):
    cell = nb.run("%joblet run -- /bin/echo one two")
    assert cell.error is None and cell.stdout == "one two\n"


# ---- %%joblet run: limits (each checked by its effect or by the agent's record) -------------


def test_max_memory_kills_a_job_that_uses_more(nb):
    cell = nb.run("%%joblet run --max-memory 32M\nx = bytearray(256 * 1024 * 1024)\nprint(len(x))")
    assert isinstance(cell.error, JobFailed) and cell.error.reason == "oom"
    assert "memory" in cell.error.summary()
    assert cell.error.record.limits.memory_mb == 32


def test_max_cpu_and_max_io_reach_the_agent(nb):
    cell = nb.run("%%joblet run --max-cpu 50 --max-io 10M\nprint('ok')")
    assert cell.error is None
    limits = nb.magics.last_result.record.limits
    assert limits.cpu_percent == 50 and limits.io_bps == 10 * 1024 * 1024


def test_pids_limit_stops_a_thread_flood(nb):
    script = (
        "import threading, time\nstarted = 0\n"
        "for _ in range(64):\n"
        "    try:\n"
        "        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()\n"
        "        started += 1\n"
        "    except RuntimeError:\n"
        "        break\n"
        "print('started', started)\n"
    )
    cell = nb.run("%%joblet run --pids 16\n" + script)
    assert cell.error is None, cell.stderr
    started = int(cell.stdout.split()[-1])
    assert started < 16
    assert nb.magics.last_result.record.limits.pids == 16


def test_timeout_stops_a_job_that_runs_too_long(nb):
    cell = nb.run("%%joblet run --timeout 1\nimport time\ntime.sleep(60)")
    assert isinstance(cell.error, JobFailed) and cell.error.reason == "timeout"


def test_disk_limit_bounds_what_a_job_can_write(nb):
    script = (
        "import errno\n"
        "try:\n"
        "    with open('big', 'wb') as f:\n"
        "        for _ in range(64):\n"
        "            f.write(b'x' * (1 << 20))\n"
        "    print('wrote 64M')\n"
        "except OSError as exc:\n"
        "    print('full', errno.errorcode[exc.errno])\n"
    )
    cell = nb.run("%%joblet run --disk 16M\n" + script)
    assert cell.error is None, cell.stderr
    assert cell.stdout.startswith("full ENOSPC"), cell.stdout
    assert nb.magics.last_result.record.limits.disk_mb == 16


def test_sizes_take_units_and_bare_numbers_mean_megabytes(nb):
    nb.run("%%joblet run --max-memory 1G --disk 64\nprint(1)")
    limits = nb.magics.last_result.record.limits
    assert limits.memory_mb == 1024 and limits.disk_mb == 64


# ---- %%joblet run: environment, network, uploads, values ---------------------------------------


def test_env_reaches_the_job(nb):
    cell = nb.run("%%joblet run --env GREETING=hello --env EMPTY=\n"
                  "import os\nprint(os.environ['GREETING'], repr(os.environ['EMPTY']))")
    assert cell.stdout == "hello ''\n"


def test_network_option_is_sent_and_default_is_none(nb):
    cell = nb.run("%%joblet run --network\nprint(1)")
    if cell.error is None:
        assert nb.magics.last_result.record.network == "bridge"
    else:  # an agent without a bridge configured refuses it, saying so
        assert isinstance(cell.error, BadRequestError) and "bridge" in str(cell.error)
    cell = nb.run("%%joblet run\nprint(1)")
    assert cell.error is None
    assert nb.magics.last_result.record.network == "none"


def test_upload_puts_a_local_file_into_work(nb, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    tool = tmp_path / "tool.sh"
    tool.write_text("#!/bin/sh\necho tool ran\n")
    tool.chmod(0o755)
    cell = nb.run(f"%%joblet run --upload {data} --upload {tool}:bin/tool.sh\n"
                  "import os, subprocess\nprint(open('data.csv').read(), end='')\n"
                  "print(subprocess.run(['./bin/tool.sh'], capture_output=True, text=True).stdout, end='')")
    assert cell.error is None, cell.stderr
    assert cell.stdout == "a,b\n1,2\ntool ran\n"


def test_in_sends_json_values_and_out_brings_them_back(nb):
    nb.shell.user_ns.update(numbers=[1, 2, 3], settings={"scale": 10}, label="x")
    cell = nb.run("%%joblet run --in numbers,settings --in label --out total --out tagged\n"
                  "total = sum(numbers) * settings['scale']\ntagged = {label: total}")
    assert cell.error is None, cell.stderr
    assert nb.shell.user_ns["total"] == 60
    assert nb.shell.user_ns["tagged"] == {"x": 60}
    # sizes are stated both ways
    assert "in: numbers (list, 9 B JSON)" in cell.stdout
    assert "out: total (int, 2 B JSON)" in cell.stdout


def test_out_fails_the_cell_naming_what_the_job_did_not_leave(nb):
    nb.shell.user_ns.pop("never_set", None)
    cell = nb.run("%%joblet run --out done --out never_set --out unjson\ndone = 1\nunjson = object()")
    assert isinstance(cell.error, OutputsMissing)
    message = str(cell.error)
    assert "did not define never_set" in message and "unjson not returned" in message
    assert len(cell.error._render_traceback_()) == 1
    assert nb.shell.user_ns["done"] == 1 and "never_set" not in nb.shell.user_ns
    tolerated = nb.run("%%joblet run --out never_set --allow-error\npass")
    assert tolerated.error is None and "did not define never_set" in tolerated.stdout


def test_in_refuses_values_that_are_not_json(nb):
    nb.shell.user_ns["handle"] = object()
    cell = nb.run("%%joblet run --in handle\nprint(handle)")
    assert isinstance(cell.error, UsageError)
    assert "not JSON" in str(cell.error)


def test_show_displays_an_image_the_job_wrote(nb):
    cell = nb.run("%%joblet run --show dot.png\n" + PNG_SCRIPT)
    assert cell.error is None, cell.stderr
    images = [o for o in cell.outputs if "image/png" in o.data]
    assert len(images) == 1
    assert "dot.png" in cell.stdout and "shown" in cell.stdout


def test_fetch_saves_a_file_next_to_the_notebook(nb, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cell = nb.run("%%joblet run --fetch result.txt\nopen('result.txt', 'w').write('42\\n')")
    assert cell.error is None, cell.stderr
    assert (tmp_path / "result.txt").read_text() == "42\n"


def test_bg_returns_at_once_and_attach_follows_and_delivers_out(nb, client):
    cell = nb.run("%%joblet run --bg --out answer\nimport time\ntime.sleep(0.5)\n"
                  "print('from the background')\nanswer = 41 + 1")
    assert cell.error is None and "from the background" not in cell.stdout
    job_id = next(iter(nb.magics.background))
    assert f"%joblet attach {job_id}" in cell.stdout
    nb.shell.user_ns.pop("answer", None)
    attached = nb.run(f"%joblet attach {job_id}")
    assert attached.error is None
    assert attached.stdout.startswith("from the background\n[joblet] out: answer")
    assert nb.shell.user_ns["answer"] == 42


def test_node_selects_a_configured_agent(nb):
    nb.magics.nodes = {"here": {"url": nb.agent.url, "token_file": str(nb.user_token_file)}}
    nb.run("%config JobletMagics.url = 'http://127.0.0.1:9'")  # the default is unreachable
    cell = nb.run("%%joblet run --node here\nprint('on node here')")
    assert cell.error is None and cell.stdout == "on node here\n"


def test_unknown_node_says_how_to_configure_one(nb):
    cell = nb.run("%%joblet run --node nowhere\nprint(1)")
    assert isinstance(cell.error, UsageError)
    assert "JobletMagics.nodes" in str(cell.error)


def test_no_status_line_in_a_terminal_shell(nb):
    cell = nb.run("%%joblet run\nprint('plain')")
    assert cell.outputs == []


# ---- line magics -----------------------------------------------------------------------------


def _bg_job(nb, source: str) -> str:
    before = set(nb.magics.background)
    cell = nb.run("%%joblet run --bg\n" + source)
    assert cell.error is None, cell.stderr
    (job_id,) = set(nb.magics.background) - before
    return job_id


def test_jobs_lists_my_jobs_as_html_and_text(nb):
    nb.run("%%joblet run\nprint(1)")
    job_id = nb.magics.last_result.job_id
    cell = nb.run("%joblet jobs")
    assert cell.error is None
    assert job_id in cell.texts() and "COMPLETED" in cell.texts()
    assert "<table" in cell.htmls() and job_id in cell.htmls()


def test_status_shows_the_record(nb):
    nb.run("%%joblet run --allow-error\nraise SystemExit(5)")
    job_id = nb.magics.last_result.job_id
    cell = nb.run(f"%joblet status {job_id}")
    text = cell.texts()
    assert "FAILED" in text and "exit_code" in text and "5" in text


def test_logs_prints_the_output_so_far(nb, client):
    job_id = _bg_job(nb, "print('line one', flush=True)\nimport time\ntime.sleep(30)")
    wait_until(lambda: any(e.type == "stdout" for e in client.events(job_id, follow=False)))
    cell = nb.run(f"%joblet logs {job_id}")
    assert cell.stdout.startswith("line one\n[joblet] job ")
    nb.run(f"%joblet stop {job_id}")
    wait_ended(client, job_id)


def test_stop_stops_a_background_job(nb, client):
    job_id = _bg_job(nb, "import time\ntime.sleep(60)")
    wait_until(lambda: client.get_job(job_id).status == "RUNNING")
    cell = nb.run(f"%joblet stop {job_id}")
    assert cell.error is None and "stop sent" in cell.stdout
    assert wait_ended(client, job_id).status == "STOPPED"


def test_delete_removes_a_finished_job(nb, client):
    nb.run("%%joblet run\nprint(1)")
    job_id = nb.magics.last_result.job_id
    cell = nb.run(f"%joblet delete {job_id}")
    assert cell.error is None
    with pytest.raises(NotFoundError):
        client.get_job(job_id)
    gone = nb.run(f"%joblet status {job_id}")
    assert isinstance(gone.error, NotFoundError)


def test_fetch_and_show_line_magics(nb, tmp_path):
    nb.run("%%joblet run\n" + PNG_SCRIPT)
    job_id = nb.magics.last_result.job_id
    cell = nb.run(f"%joblet fetch {job_id} dot.png --to {tmp_path}")
    assert cell.error is None, cell.stderr
    assert (tmp_path / "dot.png").read_bytes().startswith(b"\x89PNG")
    shown = nb.run(f"%joblet show {job_id} dot.png")
    assert any("image/png" in o.data for o in shown.outputs)


def test_info_names_the_agent_and_masks_the_token(nb):
    cell = nb.run("%joblet info")
    text = cell.texts() + cell.htmls()
    assert nb.agent.url in text and "0.1" in text
    assert "tester" in text and "role user" in text
    assert nb.agent.user_token not in text and nb.agent.admin_token not in text
    assert nb.agent.user_token[-4:] in text


def test_use_sets_this_notebooks_defaults(nb):
    cell = nb.run("%joblet use base --max-memory 96M --timeout 45 --max-cpu 50")
    assert cell.error is None
    nb.run("%%joblet run\nprint(1)")
    limits = nb.magics.last_result.record.limits
    assert limits.memory_mb == 96 and limits.cpu_percent == 50 and limits.timeout_s == 45
    nb.run("%%joblet run --max-memory 128M\nprint(1)")  # a cell's own option wins
    assert nb.magics.last_result.record.limits.memory_mb == 128


def test_use_of_a_missing_runtime_fails_clearly(nb):
    cell = nb.run("%joblet use no-such-runtime")
    assert isinstance(cell.error, RuntimeMissing)
    assert "%joblet runtime build no-such-runtime" in str(cell.error)
    assert nb.magics.default_runtime == ""


def test_use_with_fallback_says_so_and_runs_on_base(nb):
    cell = nb.run("%joblet use no-such-runtime --fallback base --max-memory 64M")
    assert cell.error is None
    assert "no-such-runtime" in cell.stdout and "using base python3 instead" in cell.stdout
    ran = nb.run("%%joblet run\nprint('on base')")
    assert ran.stdout == "on base\n"


def test_require_fails_where_the_runtime_is_missing(nb):
    cell = nb.run("%joblet require no-such-runtime")
    assert isinstance(cell.error, RuntimeMissing)
    assert "an admin builds it with `%joblet runtime build no-such-runtime`" in str(cell.error)
    assert len(cell.error._render_traceback_()) == 1


def test_require_or_skip_skips_the_cells_that_need_it(nb):
    cell = nb.run("%joblet require no-such-runtime --or-skip")
    assert cell.error is None and "skipped" in cell.stdout
    skipped = nb.run("%%joblet run -r no-such-runtime\nprint('never')")
    assert skipped.error is None and skipped.stdout.startswith("[joblet] skipped:")
    assert "skipped: runtime 'no-such-runtime'" in skipped.stdout


def test_ui_panel_sets_session_defaults_and_stops_jobs(nb, client):
    from joblet_nb.ipython.panel import BASE_RUNTIME, ControlPanel

    job_id = _bg_job(nb, "import time\ntime.sleep(60)")
    wait_until(lambda: client.get_job(job_id).status == "RUNNING")
    cell = nb.run("%joblet ui")
    assert cell.error is None
    assert "defaults" in cell.htmls() and job_id in cell.htmls()  # the static snapshot
    panel = ControlPanel(nb.magics.client(), nb.magics)
    assert BASE_RUNTIME in panel.runtime.options
    memory = panel.limits.sliders["memory_mb"]
    assert memory.value == client.limits()["defaults"]["memory_mb"]  # what a job really gets
    memory.value = 256
    assert nb.magics.default_limits == {"memory_mb": 256}
    nb.run("%%joblet run\nprint(1)")
    assert nb.magics.last_result.record.limits.memory_mb == 256
    row = panel.monitor.rows.children[1]  # running jobs first
    assert job_id in row.children[1].value
    row.children[0].click()  # its Stop button
    assert "stopping..." in panel.monitor.rows.children[1].children[1].value
    assert panel.monitor.rows.children[1].children[0].disabled
    assert wait_ended(client, job_id).status == "STOPPED"
    wait_until(lambda: "STOPPED" in "".join(r.children[1].value for r in panel.monitor.rows.children[1:]
                                             if job_id in r.children[1].value))
    panel.reset.click()
    assert nb.magics.default_limits == {} and memory.value == client.limits()["defaults"]["memory_mb"]


def test_help_lists_every_subcommand_and_option(nb):
    doc = nb.shell.find_line_magic("joblet").__doc__
    for word in ("%%joblet run", "--max-memory", "--max-cpu", "--pids", "--timeout", "--disk",
                 "--env", "--network", "--upload", "--in", "--out", "--bg", "--allow-error",
                 "--node", "attach", "status", "logs", "stop", "delete", "info", "use",
                 "require", "ui", "runtime"):
        assert word in doc, word
    cell = nb.run("%joblet?")
    assert cell.error is None


def test_config_traits_are_settable_with_percent_config(nb):
    nb.run("%config JobletMagics.default_limits = {'memory_mb': 80}")
    nb.run("%%joblet run\nprint(1)")
    assert nb.magics.last_result.record.limits.memory_mb == 80


# ---- runtimes ---------------------------------------------------------------------------------


def test_runtime_list_is_a_table(nb):
    cell = nb.run("%joblet runtime list")
    assert cell.error is None and "joblet runtimes" in cell.texts() and "<table" in cell.htmls()


@pytest.mark.parametrize("action", ["info", "test", "remove"])
def test_runtime_calls_on_a_missing_runtime_fail_in_one_line(nb, action):
    cell = nb.run(f"%joblet runtime {action} no-such-runtime")
    assert isinstance(cell.error, NotFoundError), cell.stdout
    assert len(cell.error._render_traceback_()) == 1


def test_runtime_build_needs_the_admin_token(nb, tmp_path):
    nb.run(f"%config JobletMagics.admin_token_file = {str(tmp_path / 'missing')!r}")
    cell = nb.run("%joblet runtime build no-such-runtime")
    assert isinstance(cell.error, UsageError) and "token" in str(cell.error)
    nb.configure()
    missing = nb.run("%joblet runtime build no-such-runtime")
    assert isinstance(missing.error, NotFoundError)


def test_runtime_without_a_name_is_a_usage_error(nb):
    cell = nb.run("%joblet runtime info")
    assert isinstance(cell.error, UsageError) and "needs a runtime name" in str(cell.error)


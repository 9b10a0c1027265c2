"""Real kernels (ipykernel via nbclient / jupyter_client) against the real agent.

- the example notebooks run end to end, the kernel getting JOBLET_URL / JOBLET_TOKEN /
  JOBLET_ADMIN_TOKEN in its environment;
- output lands in the cell that ran the job, also for a background job attached later;
- a failed job fails the notebook run (nbclient stops, as papermill would);
- a kernel interrupt stops the remote job.
"""

from __future__ import annotations

import base64
import queue
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

from joblet_nb.core.client import JobletClient
from joblet_nb.execute import execute
from agentproc import host_processes_with
from nbshell import PNG_SCRIPT, wait_ended
from waiting import wait_until

pytestmark = pytest.mark.root

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture
def kernel_env(agent: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The kernel inherits this environment; no client config of the machine is read."""
    monkeypatch.setenv("JOBLET_URL", agent.url)
    monkeypatch.setenv("JOBLET_TOKEN", agent.user_token)
    monkeypatch.setenv("JOBLET_ADMIN_TOKEN", agent.admin_token)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


def _run_example(name: str, workdir: Path) -> Any:
    path = workdir / name
    shutil.copy(NOTEBOOKS / name, path)
    return execute(path, cwd=workdir, timeout=300)


def _outputs(cell: Any) -> tuple[str, str, list[dict[str, Any]]]:
    stdout = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
    stderr = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
    rich = [o["data"] for o in cell.outputs if o["output_type"] in ("display_data", "execute_result")]
    return stdout, stderr, rich


def _code_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


def _notebook(folder: Path, name: str, *sources: str) -> Path:
    """A notebook of these code cells, written to `folder/name`, for a python3 kernel."""
    nb = new_notebook(cells=[new_code_cell(source) for source in sources],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                               "language": "python"}})
    path = folder / name
    nbformat.write(nb, path)
    return path


def test_data_scientist_notebook(kernel_env):
    nb = _run_example("data-scientist.ipynb", kernel_env)
    cells = _code_cells(nb)
    notes, _, _ = _outputs(cells[2])  # [joblet] lines are plain output
    assert "in: samples (list," in notes and "out: summary (dict," in notes
    stdout, _, rich = _outputs(cells[4])
    assert any("image/png" in r for r in rich), "the histogram image is shown inline"
    png = next(r["image/png"] for r in rich if "image/png" in r)
    assert base64.b64decode(png).startswith(b"\x89PNG")
    notes, _, _ = _outputs(cells[5])
    assert "reason=oom" in notes  # the limit demo reports, and the notebook goes on
    stdout, stderr, _ = _outputs(cells[7])  # the numpy cell: run where the runtime is, else skipped
    assert "quantiles:" in stdout or "skipped: runtime 'python-3.11-ml'" in stdout
    notes, _, table = _outputs(cells[9])   # the session: a pandas table, then a plot, from the sandbox
    _, _, plot = _outputs(cells[10])
    if "skipped" in notes:
        assert "python-3.11-ml" in notes and not table
    else:
        assert any("<table" in r.get("text/html", "") and "mid-high" in r["text/html"] for r in table), table
        assert any(base64.b64decode(r.get("image/png", "")).startswith(b"\x89PNG") for r in plot), plot


def test_educator_notebook_declares_its_runtime_first(kernel_env, agent):
    nb = _run_example("educator.ipynb", kernel_env)
    first = _code_cells(nb)[0]
    assert "%joblet use" in first.source
    notes, _, _ = _outputs(first)
    assert "this notebook runs with" in notes and "auto on" in notes
    cells = _code_cells(nb)
    for cell in cells[1:6]:   # every cell after the first ran in the session, and says so
        assert any("sandbox · session" in r.get("text/plain", "") for r in _outputs(cell)[2]), cell.outputs
    assert "exercise 1: correct" in _outputs(cells[2])[0]
    errors = [o for o in cells[3].outputs if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "ZeroDivisionError", cells[3].outputs
    assert "return sum(xs) / len(xs)" in "\n".join(errors[0]["traceback"])
    results = [o for o in cells[4].outputs if o["output_type"] == "execute_result"]
    assert results[0]["data"]["text/plain"] == "31.95" and results[0]["execution_count"] == cells[4].execution_count
    assert "network: unreachable" in _outputs(cells[5])[0]
    # the kernel's shutdown ended its session: no sandbox outlives the notebook
    user = JobletClient(agent.url, agent.user_token)
    wait_until(lambda: all(s["status"] == "ENDED" for s in user._request("GET", "/v1/sessions").json()))


def test_admin_notebook(kernel_env):
    nb = _run_example("admin.ipynb", kernel_env)
    cells = _code_cells(nb)
    build = cells[1]
    assert build.source.startswith("%joblet runtime build python-3.11")
    shown = "".join(r.get("text/plain", "") + r.get("text/html", "") for r in _outputs(build)[2]) + _outputs(build)[0]
    assert "publish" in shown and "COMPLETED" in shown, shown[-2000:]
    _, _, rich = _outputs(cells[2])
    assert any("joblet runtimes" in r.get("text/plain", "") for r in rich)
    assert "python-3.11" in "".join(r.get("text/plain", "") for r in rich)
    stdout, _, _ = _outputs(cells[-1])
    assert "as expected" in stdout and "runtime build no-such-runtime" in stdout


def test_output_lands_in_the_cell_that_ran_it(kernel_env, agent):
    path = _notebook(
        kernel_env, "cells.ipynb",
        "%load_ext joblet_nb",
        "%%joblet run --bg\nimport time\nfor i in range(3):\n"
        "    print('bg', i, flush=True)\n    time.sleep(0.2)",
        "%%joblet run\nimport time\nprint('first', flush=True)\ntime.sleep(0.5)\n"
        "print('second', flush=True)",
        "print('plain python')",
        "import joblet_nb\n(job_id,) = joblet_nb._magics.background\n"
        "%joblet attach {job_id}",
        "print('last')")
    done = execute(path, cwd=kernel_env, timeout=120)
    out = [_outputs(c) for c in done.cells]
    assert "bg " not in out[1][0] and "%joblet attach" in out[1][0]
    assert out[2][0] == "first\nsecond\n"
    assert out[3][0] == "plain python\n"
    assert out[4][0] == "bg 0\nbg 1\nbg 2\n", out[4]
    assert out[5][0] == "last\n"
    # the live status line is a widget with a text/html snapshot of the final state
    status = [r for r in out[2][2] if "application/vnd.jupyter.widget-view+json" in r]
    assert len(status) == 1
    assert "COMPLETED" in status[0]["text/plain"] and "COMPLETED" in status[0]["text/html"]


def test_show_and_fetch_globs_match_the_jobs_file_listing(kernel_env):
    """`--show *.png` and `--fetch out/*.csv` expand against GET /v1/jobs/{id}/files (a magic's line is
    not a shell's: the patterns need no quotes)."""
    writes = (PNG_SCRIPT + "import os, shutil\nos.makedirs('plots')\n"
              "shutil.copy('dot.png', 'plots/dot2.png')\nos.makedirs('out')\n"
              "for name in ('x.csv', 'y.csv', 'z.txt'):\n    open('out/' + name, 'w').write(name)\n")
    path = _notebook(
        kernel_env, "globs.ipynb",
        "%load_ext joblet_nb",
        "%%joblet run --show *.png --fetch out/*.csv\n" + writes,
        "%%joblet run --show *.gif\nprint('no gif')")
    with pytest.raises(CellExecutionError) as err:
        execute(path, cwd=kernel_env, timeout=120, save_to=path)
    notes, _, rich = _outputs(nbformat.read(path, as_version=4).cells[1])
    images = [base64.b64decode(r["image/png"]) for r in rich if "image/png" in r]
    assert len(images) == 2 and all(i.startswith(b"\x89PNG") for i in images)
    assert "dot.png: " in notes and "plots/dot2.png: " in notes
    assert (kernel_env / "x.csv").read_text() == "x.csv" and (kernel_env / "y.csv").read_text() == "y.csv"
    assert not (kernel_env / "z.txt").exists() and not (kernel_env / "run.py").exists()
    assert "NotFoundError" in str(err.value) and "matches '*.gif'" in str(err.value)


def test_ui_panel_has_a_static_snapshot_in_a_kernel(kernel_env):
    path = _notebook(kernel_env, "ui.ipynb", "%load_ext joblet_nb\n%joblet ui")
    done = execute(path, cwd=kernel_env, timeout=120)
    _, _, rich = _outputs(done.cells[0])
    (panel,) = [r for r in rich if "application/vnd.jupyter.widget-view+json" in r]
    assert "defaults: runtime=" in panel["text/html"] and "<table" in panel["text/html"]
    assert "joblet defaults" in panel["text/plain"]


def test_a_failed_job_stops_the_notebook(kernel_env):
    path = _notebook(
        kernel_env, "fail.ipynb",
        "%load_ext joblet_nb",
        "%%joblet run\nimport sys\nprint('about to fail', file=sys.stderr)\n"
        "raise SystemExit(7)",
        "print('never runs')")
    with pytest.raises(CellExecutionError) as err:
        execute(path, cwd=kernel_env, timeout=120, save_to=path)
    assert "JobFailed" in str(err.value) and "exit_code=7" in str(err.value)
    saved = nbformat.read(path, as_version=4)
    (error,) = [o for o in saved.cells[1].outputs if o["output_type"] == "error"]
    assert error["ename"] == "JobFailed"
    _, stderr, _ = _outputs(saved.cells[1])
    assert "about to fail" in stderr and "about to fail" not in "".join(error["traceback"])  # once
    assert saved.cells[2].outputs == []


def test_kernel_interrupt_stops_the_remote_job(kernel_env, agent):
    from jupyter_client.manager import start_new_kernel

    marker = "4243.125"
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(kernel_env))
    try:
        kc.execute_interactive("%load_ext joblet_nb", timeout=60)
        msg_id = kc.execute(
            "%%joblet run\nimport subprocess, time\n"
            f"subprocess.Popen(['sleep', '{marker}'])\nprint('started', flush=True)\n"
            "time.sleep(120)")
        outputs = _collect_until(kc, msg_id, km, marker)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    errors = [c for t, c in outputs if t == "error"]
    assert errors and errors[0]["ename"] in ("JobInterrupted", "KeyboardInterrupt")
    assert "STOPPED" in "".join(errors[0]["traceback"])
    job_id = errors[0]["evalue"].split()[2]
    client = JobletClient(agent.url, agent.user_token)
    assert wait_ended(client, job_id).status == "STOPPED"
    assert host_processes_with(f"sleep {marker}") == []


def _collect_until(kc: Any, msg_id: str, km: Any, marker: str) -> list[tuple[str, dict[str, Any]]]:
    """Read iopub for the cell; interrupt the kernel once the job's first line has arrived."""
    seen: list[tuple[str, dict[str, Any]]] = []
    interrupted = False
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=120)
        except queue.Empty:
            raise AssertionError(f"the kernel went quiet; seen so far: {seen}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        seen.append((kind, content))
        if kind == "stream" and "started" in content.get("text", "") and not interrupted:
            assert wait_until(lambda: host_processes_with(f"sleep {marker}")), "the job's child never showed"
            km.interrupt_kernel()
            interrupted = True
        if kind == "status" and content["execution_state"] == "idle" and interrupted:
            return seen


@pytest.mark.slow
def test_data_scientist_session_shows_a_real_pandas_table_and_plot(kernel_env, ml_runtime):
    """With python-3.11-ml on the agent (built once if missing), the session cells run for real."""
    cells = _code_cells(_run_example("data-scientist.ipynb", kernel_env))
    _, stderr, table = _outputs(cells[9])
    _, _, plot = _outputs(cells[10])
    assert "skipped" not in stderr
    html = next(r["text/html"] for r in table if "text/html" in r)
    assert '<table border="1" class="dataframe">' in html and "<th>mid-high</th>" in html
    assert any(base64.b64decode(r.get("image/png", "")).startswith(b"\x89PNG") for r in plot), plot


def _completions(kc: Any, code: str) -> list[str]:
    reply = kc.complete(code, len(code), reply=True, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]["matches"]


def _live_sessions(client: JobletClient) -> set[str]:
    listing = client._request("GET", "/v1/sessions").json()
    return {s["id"] for s in listing if s["status"] != "ENDED"}


def test_tab_in_a_real_kernel_completes_from_the_session_and_the_kernels_exit_ends_it(kernel_env, agent):
    """complete_request as a notebook server sends it: a `%%joblet run --session` cell's body and
    every cell under `%joblet auto` get the session's names, not the kernel's; a plain `%%joblet`
    cell gets neither. Shutting the kernel down ends its session."""
    from jupyter_client.manager import start_new_kernel

    client = JobletClient(agent.url, agent.user_token)
    before = _live_sessions(client)
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(kernel_env))
    try:
        for code in ("%load_ext joblet_nb", "%joblet session start", "kernel_only_value = 1",
                     "%%joblet run --session\nsession_only_value = 2"):
            reply = kc.execute_interactive(code, timeout=120)
            assert reply["content"]["status"] == "ok", (code, reply["content"])
        (started,) = _live_sessions(client) - before
        assert "session_only_value" in _completions(kc, "%%joblet run --session\nx = 1\nsession_only_v")
        assert "kernel_only_value" not in _completions(kc, "%%joblet run --session\nkernel_only_v")
        assert "session_only_value" not in _completions(kc, "%%joblet run\nsession_only_v")
        assert "kernel_only_value" in _completions(kc, "kernel_only_v")   # a local cell: the kernel's
        kc.execute_interactive("%joblet auto", timeout=120)
        assert "session_only_value" in _completions(kc, "session_only_v")
        assert "kernel_only_value" not in _completions(kc, "kernel_only_v")
        kc.execute_interactive("%joblet auto off", timeout=120)
        assert "kernel_only_value" in _completions(kc, "kernel_only_v")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)   # as a notebook server's shutdown: the kernel exits itself
    assert wait_until(lambda: client.session_record(started)["status"] == "ENDED")
    assert client.session_record(started)["reason"] == "deleted"

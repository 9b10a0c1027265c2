"""notebooks/cluster.ipynb in a real kernel (nbclient) against an agent with `executor: slurm`:
output streams from the node, a GPU ask shows its device, `%joblet jobs` names node and Slurm job."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from joblet_nb.execute import execute
from slurmcluster import SlurmCluster
from waiting import wait_until

pytestmark = pytest.mark.root

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "cluster.ipynb"


def _text(cell: Any) -> str:
    parts = [o.get("text", "") for o in cell.outputs if o.get("name") == "stdout"]
    parts += [o["data"].get("text/plain", "") + o["data"].get("text/html", "")
              for o in cell.outputs if o["output_type"] in ("display_data", "execute_result")]
    return "".join(parts)


def test_the_cluster_notebook_runs_its_cells_through_slurm(slurm_agent, slurm_cluster: SlurmCluster,
                                                          monkeypatch, tmp_path):
    monkeypatch.setenv("JOBLET_URL", slurm_agent.url)
    monkeypatch.setenv("JOBLET_TOKEN", slurm_agent.user_token)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, path)
    started = time.time()
    nb = execute(path, cwd=tmp_path, timeout=300)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert _text(code[1]).split("\n")[:3] == ["step 0", "step 1", "step 2"], code[1].outputs
    gpu = _text(code[2])
    assert "CUDA_VISIBLE_DEVICES = 0" in gpu and "['fakegpu0']" in gpu, gpu
    jobs = _text(code[3])
    assert slurm_cluster.node in jobs and "fakegpu0" in jobs, jobs
    # the notebook's own two jobs (the session's agent also lists earlier tests' jobs, whose Slurm
    # records slurmctld forgets after MinJobAge): each row names its Slurm job, which is this
    # cluster's, named after the agent's job
    ours = [j for j in slurm_agent.api().call("GET", "/v1/jobs").json() if j["created_at"] >= started]
    assert len(ours) == 2, ours
    for job in ours:
        slurm_id = job["cluster"]["job_id"]
        assert re.search(rf"slurm {slurm_id}\b", jobs), jobs
        shown = slurm_cluster.run("scontrol", "show", "job", "-o", slurm_id).stdout
        assert re.search(rf"JobName=jnb-\S*-{job['id']}\b", shown), shown


def test_a_cells_output_reaches_the_kernel_while_its_slurm_job_still_runs(slurm_agent, slurm_cluster: SlurmCluster,
                                                                         monkeypatch, tmp_path):
    """Through a real kernel (jupyter_client): when the cell's first line arrives, its job is RUNNING
    on the node with a Slurm job id; the toolbar's interrupt then stops it and it leaves squeue. A
    follower that held the output until the end would see the first line only after 120 s, ended."""
    from jupyter_client.manager import start_new_kernel

    monkeypatch.setenv("JOBLET_URL", slurm_agent.url)
    monkeypatch.setenv("JOBLET_TOKEN", slurm_agent.user_token)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    api = slurm_agent.api()
    km, kc = start_new_kernel(kernel_name="python3")
    at_first_line: list[dict[str, Any]] = []

    def keep(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and "first" in msg["content"]["text"] and not at_first_line:
            jobs = api.call("GET", "/v1/jobs").json()
            at_first_line.append(max(jobs, key=lambda j: j["created_at"]))
            km.interrupt_kernel()

    try:
        kc.execute_interactive("%load_ext joblet_nb", timeout=60)
        reply = kc.execute_interactive("%%joblet run --max-memory 256M --no-status\nimport time\n"
                                       "print('first', flush=True)\ntime.sleep(120)\nprint('last')",
                                       timeout=300, output_hook=keep)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert at_first_line, "the first line never reached the kernel"
    job = at_first_line[0]
    assert job["status"] == "RUNNING" and job["node"] == slurm_cluster.node, job
    assert job["cluster"]["engine"] == "slurm" and job["cluster"]["job_id"].isdigit(), job
    assert reply["content"]["status"] == "error", "the interrupt ended the cell"
    assert api.wait_for_status(job["id"])["status"] == "STOPPED"
    wait_until(lambda: job["cluster"]["job_id"] not in slurm_cluster.run("squeue", "-h", "-o", "%i").stdout,
               timeout=30)

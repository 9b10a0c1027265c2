"""notebooks/cluster.ipynb in a real kernel (nbclient) against an agent with `executor: slurm`:
output streams from the node, a GPU ask shows its device, `%joblet jobs` names node and Slurm job."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from joblet_nb.execute import execute
from slurmcluster import SlurmCluster

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
    nb = execute(path, cwd=tmp_path, timeout=300)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert _text(code[1]).split("\n")[:3] == ["step 0", "step 1", "step 2"], code[1].outputs
    gpu = _text(code[2])
    assert "CUDA_VISIBLE_DEVICES = 0" in gpu and "['fakegpu0']" in gpu, gpu
    jobs = _text(code[3])
    assert slurm_cluster.node in jobs and "fakegpu0" in jobs, jobs
    slurm_ids = re.findall(r"slurm (\d+)", jobs)
    assert len(set(slurm_ids)) >= 2, jobs
    for slurm_id in slurm_ids:  # each is a job of this cluster's Slurm, named after the agent's job
        assert "JobName=jnb-" in slurm_cluster.run("scontrol", "show", "job", "-o", slurm_id).stdout

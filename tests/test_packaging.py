"""A notebook user's install: `pip install joblet-nb` without the `agent` extra, in a fresh venv.

The client and the magics must install and work there (a laptop, Linux or macOS), with none of
the agent's Linux-only dependencies, and `joblet-agent` must say what to install instead of
failing with an ImportError. The project is installed from a copy of this tree, as a user would
install it, with its dependencies from the package index.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import importlib.util, sys
import joblet_nb, joblet_nb.core.client
from joblet_nb import JobletClient
assert "IPython" not in sys.modules, "the client imports IPython"
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "joblet_nb")
assert shell.find_cell_magic("joblet") is not None
present = [m for m in ("fastapi", "uvicorn", "pyroute2", "pyseccomp", "yaml", "cryptography")
           if importlib.util.find_spec(m) is not None]
assert not present, f"agent dependencies installed without the agent extra: {present}"
print("notebook side ok")
"""


@pytest.mark.slow
def test_the_notebook_side_installs_and_loads_without_the_agent_extra(tmp_path: Path) -> None:
    tree = tmp_path / "joblet-nb"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    for package in ("agent", "joblet_nb"):
        shutil.copytree(ROOT / package, tree / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", str(tree)],
                             capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, install.stderr[-3000:]

    check = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert check.returncode == 0 and "notebook side ok" in check.stdout, check.stderr[-3000:]

    agent = subprocess.run([str(venv / "bin" / "joblet-agent"), "serve"], capture_output=True,
                           text=True, timeout=60)
    assert agent.returncode == 2
    assert "pip install 'joblet-nb[agent]'" in agent.stderr and "Traceback" not in agent.stderr

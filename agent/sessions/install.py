"""The runner as a sandbox sees it: a folder of the agent's, bound read-only at /opt/joblet.

It holds a copy of runner.py and that copy's bytecode for the agent's own CPython version, so a
session's python (the base system's or a runtime's of the same version) imports it instead of
compiling five hundred lines at every start; another version compiles it as a script would. The
folder is remade at every start of the agent, from the runner it ships.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import shutil
from pathlib import Path

RUNNER = Path(__file__).with_name("runner.py")
IN_SANDBOX = "/opt/joblet"
MODULE = "session_runner"
# run by the sandbox's python: import the runner from its read-only folder, then forget the folder
BOOT = (f"import sys; sys.path.insert(0, {IN_SANDBOX!r}); import {MODULE}; "
        f"sys.path.remove({IN_SANDBOX!r}); {MODULE}.main()")


def install_runner(directory: Path) -> Path:
    """(Re)make the runner's folder; returns it (to bind at IN_SANDBOX)."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    target = directory / f"{MODULE}.py"
    tmp = directory / f".{MODULE}.tmp"
    shutil.copyfile(RUNNER, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    cache = Path(importlib.util.cache_from_source(str(target)))
    py_compile.compile(str(target), cfile=str(cache), doraise=True)
    os.chmod(cache.parent, 0o755)
    os.chmod(cache, 0o644)
    return directory

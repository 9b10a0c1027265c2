"""The runner as a sandbox sees it: two files in the sandbox's own /work/.joblet, as a job's cell
runner is (jobs/spec.py), never a folder of the host's; gone again once the runner is imported.

A bind of a folder under the agent's root would show that root's host path in the sandbox's
/proc/self/mountinfo (the escape probe `agent_root` proves it does not). The files are the runner's
source and its bytecode for the agent's own CPython version, compiled once per agent start with an
unchecked hash: a session's python of that version (the base system's, or a runtime's) imports the
bytecode without compiling five hundred lines at every start; another version compiles the source.
"""

from __future__ import annotations

import importlib.util
import py_compile
import tempfile
from pathlib import Path

from ..sandbox.spec import WorkFile

RUNNER = Path(__file__).with_name("runner.py")
FOLDER = ".joblet/runner"               # under /work
IN_SANDBOX = f"/work/{FOLDER}"
MODULE = "session_runner"
# run by the sandbox's python: import the runner from its folder (writing no bytecode there), then
# remove the folder, so nothing of the runner stays in /work for a cell to change or to trip over
BOOT = f"""import os, sys
sys.dont_write_bytecode = True
sys.path.insert(0, {IN_SANDBOX!r})
import {MODULE}
sys.path.remove({IN_SANDBOX!r})
sys.dont_write_bytecode = False
for folder, _, names in os.walk({IN_SANDBOX!r}, topdown=False):
    for name in names:
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)
try:
    os.rmdir(os.path.dirname({IN_SANDBOX!r}))
except OSError:
    pass
{MODULE}.main()
"""

def runner_files() -> list[WorkFile]:
    """The runner's source and bytecode, as uploads of a session's sandbox."""
    source = RUNNER.read_bytes()
    cache = Path(importlib.util.cache_from_source(f"{MODULE}.py"))   # __pycache__/<module>.<tag>.pyc
    with tempfile.TemporaryDirectory(prefix="jnb-runner-") as tmp:
        target = Path(tmp) / f"{MODULE}.py"
        target.write_bytes(source)
        compiled = Path(tmp) / cache
        py_compile.compile(str(target), cfile=str(compiled), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        bytecode = compiled.read_bytes()
    return [WorkFile(f"{FOLDER}/{MODULE}.py", source, 0o644), WorkFile(f"{FOLDER}/{cache}", bytecode, 0o644)]

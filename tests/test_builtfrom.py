"""A helper binary built from other sources than the agent's (builtfrom.py).

A checkout updated without scripts/install.sh keeps its old jnb-init and jnb-holder, and an old
jnb-holder reads a new plan as "bad plan" after the exec, losing the job. These tests check that
the stamp tells a stale binary from a fresh one, that the agent refuses to start with a stale
jnb-init, and that a stale jnb-holder leaves the job to the Python holder, which runs it whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from agentproc import AGENT, AgentProcess, Api, free_port
from test_holder_c import COUNTER, _exe, _holder, _stop

from joblet_agent.sandbox import builtfrom, holderplan, initplan


def _sources(folder: Path) -> None:
    for name, text in {"holder.c": "int main(void){return 0;}\n", "holder.h": "#pragma once\n",
                       "holder_a.c": "int a;\n", "init.c": "int main(void){return 1;}\n"}.items():
        (folder / name).write_text(text)


def test_the_stamp_follows_every_source_of_its_binary_and_no_other(tmp_path: Path):
    _sources(tmp_path)
    binary = str(tmp_path / "jnb-holder")
    assert [p.name for p in builtfrom.sources(binary, tmp_path)] == ["holder.c", "holder.h", "holder_a.c"]
    assert builtfrom.stale(binary, tmp_path), "no stamp yet: stale"
    builtfrom.write_stamp(binary, tmp_path)
    assert not builtfrom.stale(binary, tmp_path)
    (tmp_path / "init.c").write_text("changed\n")  # another binary's source
    assert not builtfrom.stale(binary, tmp_path)
    (tmp_path / "holder_a.c").write_text("int a = 1;\n")
    assert builtfrom.stale(binary, tmp_path)
    builtfrom.write_stamp(binary, tmp_path)
    (tmp_path / "holder_b.c").write_text("")  # a new file of its own, even empty
    assert builtfrom.stale(binary, tmp_path)
    (tmp_path / "holder_b.c").unlink()
    (tmp_path / "holder_a.c").rename(tmp_path / "holder_c.c")  # the same bytes under another name
    assert builtfrom.stale(binary, tmp_path)


def test_without_sources_a_binary_is_taken_as_it_is(tmp_path: Path):
    """An installed wheel carries no C sources: nothing to compare, so nothing is called stale."""
    assert builtfrom.digest(str(tmp_path / "jnb-init"), tmp_path) is None
    assert not builtfrom.stale(str(tmp_path / "jnb-init"), tmp_path)


def test_install_sh_asks_the_module_whether_to_rebuild(tmp_path: Path):
    """`--stale` exits 1 for a missing binary or a stale stamp, 0 for a fresh one (the binaries
    install.sh built beside this package)."""
    def stale(binary: str) -> int:
        return subprocess.run([sys.executable, "-m", "joblet_agent.sandbox.builtfrom", "--stale", binary]).returncode

    assert stale(str(tmp_path / "jnb-holder")) == 1
    assert stale(holderplan.BINARY) == 0 and stale(initplan.BINARY) == 0


@contextmanager
def _stamp_of_other_sources(binary: str) -> Iterator[None]:
    stamp = Path(builtfrom.stamp_path(binary))
    kept = stamp.read_bytes()
    stamp.write_text("0" * 64 + "\n")
    try:
        yield
    finally:
        stamp.write_bytes(kept)


@pytest.mark.root
def test_a_stale_jnb_init_stops_the_agent_with_what_to_do(tmp_path: Path):
    with _stamp_of_other_sources(initplan.BINARY):
        proc = subprocess.Popen(AGENT + ["serve", "--root", str(tmp_path / "r"), "--listen", f"127.0.0.1:{free_port()}"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:  # it came up after all: stop it, then fail below
                os.killpg(proc.pid, 15)
                out, _ = proc.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert proc.returncode != 0, text
    assert "built from other sources" in text and "scripts/install.sh" in text, text
    assert "Traceback" not in text, text


@pytest.mark.root
def test_a_stale_jnb_holder_leaves_the_job_to_the_python_holder(api: Api, agent: AgentProcess):
    """The agent runs on while the stamp changes under it: its launcher asks again and keeps the
    job in Python, and the job runs whole; with the stamp back, jnb-holder takes the next job."""
    with _stamp_of_other_sources(holderplan.BINARY):
        job_id = api.submit(command=["python3", "-c", COUNTER])
        pid, _ = _holder(agent, job_id)
        api.wait_for_output(job_id, "2\n")
        assert "python" in os.path.basename(_exe(pid)), _exe(pid)
        assert _stop(api, job_id)["reason"] == "stopped"
        result = api.run(command=["sh", "-c", "printf 'x\\377y'"])
        assert result.stdout == "x\ufffdy"
    job_id = api.submit(command=["python3", "-c", COUNTER])
    try:
        pid, _ = _holder(agent, job_id)
        api.wait_for_output(job_id, "2\n")
        assert _exe(pid) == holderplan.BINARY
    finally:
        _stop(api, job_id)

"""A runtime's mount sources are bound from what openat2 resolved beneath `isolated/`, never by a
path the kernel walks again (issue 13, item 2, the init's side).

The cleanup phase and the manifest checks make sure a published tree is as built; this is the layer
below them, attacked on its own: a version folder whose source `a/b` is a symlink to the host's
root, handed to the real JobService and launcher in this process as a published runtime's mounts
(the per-job manifest check, which would also refuse it, is left out on purpose). The job must not
start, and must see nothing of the host. The same for the binds a Slurm node makes from the shared
runtimes folder (node/runtime.py), with the node's manifest checks left out the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from joblet_agent.auth import Principal
from joblet_agent.builds.published import PublishedRuntimes
from joblet_agent.builds.spec import parse
from joblet_agent.config import AgentConfig
from joblet_agent.cluster.launcher_client import Launcher
from joblet_agent.jobs.service import JobService
from joblet_agent.jobs.spec import RuntimeMounts
from joblet_agent.models import JobRecord, JobRequest
from joblet_agent.node import runtime as node_runtime
from joblet_agent.paths import AgentPaths
from joblet_agent.sandbox import cgroups
from agentproc import sweep_cgroups
from waiting import run_coroutine

pytestmark = pytest.mark.root

SPEC = """\
name: planted
language: shell
version: "1"
architectures: [x86_64, aarch64]
mounts:
  - {source: isolated/a/b, target: /opt/runtimes/planted/b}
script: {command: [/bin/sh], suffix: .sh}
test: {command: [/bin/true]}
"""


async def run_job(service: JobService, command: list[str], mounts: object) -> JobRecord:
    who = Principal(id="tester", name="tester", role="user")
    record = await service.start(who, JobRequest(command=command), runtime_mounts=mounts)  # type: ignore[arg-type]
    finished = await service.wait(record.id)
    assert finished is not None
    return finished


def agent_mounts(version: Path, monkeypatch: pytest.MonkeyPatch) -> RuntimeMounts:
    return PublishedRuntimes.mounts(parse(SPEC, "runtime.yml").spec, str(version))


def node_mounts(version: Path, monkeypatch: pytest.MonkeyPatch) -> RuntimeMounts:
    """What a node binds for the published build `version` (in a runtimes folder of its own)."""
    runtimes = version.parent / "runtimes"
    (runtimes / ".versions" / "planted").mkdir(parents=True)
    os.rename(version, runtimes / ".versions" / "planted" / "b1")
    os.symlink(".versions/planted/b1", runtimes / "planted")
    monkeypatch.setattr(node_runtime.mf, "manifest_digest", lambda _dir: "0" * 64)
    monkeypatch.setattr(node_runtime.mf, "verify_stat", lambda _dir, _manifest: None)
    monkeypatch.setattr(node_runtime.mf, "load_manifest", lambda _dir: {})
    ref = {"name": "planted", "build": "b1", "manifest_sha256": "0" * 64,
           "mounts": [{"source": "isolated/a/b", "target": "/opt/runtimes/planted/b"}]}
    binds = node_runtime.mounts(ref, str(runtimes), "node-1")
    return RuntimeMounts(name="planted", mounts=binds, env={}, script_command=["/bin/sh"], script_suffix=".sh")


@pytest.mark.parametrize("resolve", [agent_mounts, node_mounts], ids=["agent", "slurm-node"])
def test_a_source_that_is_a_symlink_to_the_host_root_is_never_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     resolve: object) -> None:
    version = tmp_path / "version"
    (version / "isolated" / "a").mkdir(parents=True)
    os.symlink("/", version / "isolated" / "a" / "b")
    mounts = resolve(version, monkeypatch)  # type: ignore[operator]
    root = Path(tempfile.mkdtemp(prefix="jnb-test-sources-"))
    paths = AgentPaths.at(root)
    paths.ensure()
    launcher = Launcher(paths.cgroup_parent())
    launcher.start()
    try:
        service = JobService(paths, AgentConfig(), cgroups.detect(paths.cgroup_parent()), launcher)
        record = run_coroutine(run_job(service, ["cat", "/opt/runtimes/planted/b/etc/hostname"], mounts))
        events = (service.store.dir(record.id) / "events.ndjson").read_text().splitlines()
        out = "".join(json.loads(e).get("data", "") for e in events if '"type":"stdout"' in e)
    finally:
        launcher.stop()
        sweep_cgroups(paths.cgroup_parent())
        shutil.rmtree(root, ignore_errors=True)
    assert out == "", f"the job read the host's /etc/hostname through the runtime: {out!r}"
    assert (record.status.value, record.reason) == ("FAILED", "setup"), record
    assert "runtime mount source 'a/b'" in (record.message or ""), record.message

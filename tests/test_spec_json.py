"""The sandbox spec's JSON, the agent's hand-over to a stage: built field by field (no `asdict`
recursion per mount), it is the JSON `asdict` made, and the stage reads back the spec it was."""

from __future__ import annotations

import dataclasses
import json

from joblet_agent.contract import JobType
from joblet_agent.sandbox.cgroups import CgroupLimits
from joblet_agent.sandbox.spec import Mount, SandboxSpec, WorkFile


def _spec() -> SandboxSpec:
    return SandboxSpec(
        job_id="00112233aabbccdd", job_type=JobType.STANDARD, root_dir="/jnb-root", argv=["sh", "-c", "echo é"],
        env={"JOB_ID": "00112233aabbccdd", "PATH": "/usr/bin"}, uid=1000123, gid=1000123,
        system=Mount(source="/jnb-base/usr", target="/usr"),
        mounts=[Mount(source="/etc/ssl/certs", target="/etc/ssl/certs"),
                Mount(source="lib", target="/opt/rt", readonly=False, beneath="/jnb-runtimes/py")],
        masks=["/proc/kcore"], uploads=[WorkFile(path="cell.py", content=b"\x00\xffprint(1)\n", mode=0o600)],
        cgroup_limits=CgroupLimits(cpu_percent=50, memory_mb=64, pids=10, io_bps=1 << 20, io_device=(8, 0),
                                   devices=(("c", 1, 3), ("c", 195, -1))),
        devices=["/dev/null"], timeout_s=2.5, output_options={"cell": True})


def test_the_spec_json_is_what_asdict_made_and_reads_back_whole() -> None:
    spec = _spec()
    made = spec.to_json_dict()
    reference = dataclasses.asdict(spec)
    reference["job_type"] = spec.job_type.value
    reference["uploads"] = [{"path": u.path, "content": u.content.hex(), "mode": u.mode} for u in spec.uploads]
    assert json.dumps(made, sort_keys=True) == json.dumps(reference, sort_keys=True)
    assert SandboxSpec.from_json_dict(json.loads(json.dumps(made))) == spec
    bare = dataclasses.replace(spec, system=None, mounts=[], uploads=[], cgroup_limits=CgroupLimits())
    assert SandboxSpec.from_json_dict(json.loads(json.dumps(bare.to_json_dict()))) == bare

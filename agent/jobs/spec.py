"""From a validated job request to a SandboxSpec: what a production job runs, with what.

Pure functions of the request, the agent's defaults and the runtime; the JobService decides when
and the sandbox package decides how.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import etcfiles
from ..config import DefaultLimits, MaxLimits
from ..contract import JobType
from ..errors import BadRequest
from ..models import JobLimits, JobRecord, JobRequest
from ..policy import Policy
from ..sandbox.cgroups import CgroupLimits
from ..sandbox.spec import BASE_PATH, Mount, SandboxSpec, WorkFile

CELL_RUNNER = Path(__file__).with_name("cell_runner.py")
HOSTNAME = "joblet"
BASE_RUNTIME = "base"
"""The runtime that is production jobs' /usr (the minimal base image), not a mount under /opt/runtimes."""


@dataclass
class RuntimeMounts:
    """What a runtime adds to a job: read-only mounts, environment, how to run a script."""

    name: str
    mounts: list[Mount]
    env: dict[str, str]
    script_command: list[str]  # the script's file path is appended
    script_suffix: str = ".py"
    version_dir: str | None = None      # the published build (a cluster node must find the same one)
    manifest_sha256: str | None = None  # its manifest's digest, as recorded at publish


def effective_limits(asked: JobLimits, defaults: DefaultLimits, maximum: MaxLimits,
                     policy: Policy | None = None) -> JobLimits:
    """The request's limits, with the agent's defaults where it gave none; an ask above the
    agent's maximum (or a hub user's group maximum, `policy`) is refused, naming the limit and the maximum."""
    chosen = {name: getattr(asked, name) if getattr(asked, name) is not None else getattr(defaults, name)
              for name in JobLimits.model_fields}
    if policy is not None:
        chosen = policy.clamp(asked.model_dump(), chosen)
    for name, value in chosen.items():
        top = getattr(maximum, name)
        if value is not None and value > top:
            raise BadRequest(f"limits.{name}: {value:g} is above this agent's maximum of {top:g} "
                             f"(max_limits in its config)")
    return JobLimits(**chosen)


def limits_info(defaults: DefaultLimits, maximum: MaxLimits, policy: Policy | None = None) -> dict[str, Any]:
    """`GET /v1/limits` for one caller: what a job that sets no limit gets (None: no limit), and
    the most it may ask for, under the caller's group caps where the config gives some."""
    got = effective_limits(JobLimits(), defaults, maximum, policy).model_dump()
    top = maximum.model_dump()
    for name, cap in (policy.caps.items() if policy is not None else ()):
        if name in top:
            top[name] = min(top[name], cap)
    return {"defaults": got, "maximum": top}


def program(req: JobRequest, runtime: RuntimeMounts | None) -> tuple[list[str], list[WorkFile]]:
    """argv and the files to put in /work: a command as given, or a cell's script with its runner
    (Python) or as a source file for the runtime's interpreter (java, node)."""
    uploads = [WorkFile(u.path, u.content(), u.mode) for u in req.uploads]
    if req.command is not None:
        return list(req.command), uploads
    assert req.script is not None
    if runtime is not None and runtime.script_suffix != ".py":
        stem = "Main" if runtime.script_suffix == ".java" else "cell"
        name = stem + runtime.script_suffix
        uploads.append(WorkFile(f".joblet/{name}", req.script.encode(), 0o644))
        return runtime.script_command + [f"/work/.joblet/{name}"], uploads
    uploads += [
        WorkFile(".joblet/run.py", CELL_RUNNER.read_bytes(), 0o644),
        WorkFile(".joblet/cell.py", req.script.encode(), 0o644),
        WorkFile(".joblet/cell.json", json.dumps({"outputs": req.outputs}).encode(), 0o644),
    ]
    if req.inputs:
        uploads.append(WorkFile(".joblet/inputs.json", json.dumps(req.inputs).encode(), 0o644))
    interpreter = runtime.script_command if runtime else ["python3"]
    return interpreter + ["/work/.joblet/run.py"], uploads


def job_env(record: JobRecord, req: JobRequest, runtime: RuntimeMounts | None) -> dict[str, str]:
    """The whole environment of a job: a fixed base, the runtime's, the request's, then JOB_ID
    (reserved names never reach here: the request model refuses them)."""
    env = {"PATH": BASE_PATH, "HOME": "/work", "USER": etcfiles.JOB_USER, "LOGNAME": etcfiles.JOB_USER,
           "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
    if runtime is not None:
        env.update(runtime.env)
    env.update(req.env)
    env["JOB_ID"] = record.id
    return env


def standard_spec(record: JobRecord, req: JobRequest, runtime: RuntimeMounts | None, uid: int,
                  root_dir: Path, artifacts_dir: Path | None, cgroup_limits: CgroupLimits,
                  refuse_tcp: bool = False, base: RuntimeMounts | None = None) -> SandboxSpec:
    """The production sandbox of one job (`refuse_tcp`: the agent's network.none_tcp is refuse); the
    base image's one source (its usr/ tree) is its /usr, without one the host's is."""
    argv, uploads = program(req, runtime)
    return SandboxSpec(
        job_id=record.id, job_type=JobType.STANDARD, root_dir=str(root_dir), argv=argv,
        env=job_env(record, req, runtime), uid=uid, gid=uid, hostname=HOSTNAME,
        disk_mb=record.limits.disk_mb or 256,
        system=replace(base.mounts[0], target="/usr", readonly=True) if base else None,
        mounts=etcfiles.etc_binds() + (runtime.mounts if runtime else []),
        etc_files=etcfiles.etc_files(uid, uid, HOSTNAME, record.network), uploads=uploads,
        cgroup_limits=cgroup_limits, network=record.network, artifacts_dir=str(artifacts_dir) if artifacts_dir else None,
        refuse_tcp=refuse_tcp and record.network == "none",
    )

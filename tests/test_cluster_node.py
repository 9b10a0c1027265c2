"""The node side on its own, through a real one-node Slurm: a signed spec in, frames out.

The agent's executor builds these specs in production; here the test builds them the same way
(jobs.spec.standard_spec) and reads the frames with the agent's own FrameReader.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

from pathlib import Path
from typing import Any

import pytest

from joblet_agent.cluster import signing, wire
from joblet_agent.jobs import spec as jobspec
from joblet_agent.models import JobLimits, JobRecord, JobRequest
from joblet_agent.sandbox import cgroups

from slurmcluster import SlurmCluster, node_leftovers

PREFIX = "jnb-nodetest-"
pytestmark = pytest.mark.root


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster) -> SlurmCluster:
    return slurm_cluster


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="jnb-nodetest-"))
    signing.ensure_key(str(base / "cluster.key"))
    yield base
    subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def make_payload(body: dict[str, Any], gpus: int = 0, timeout_s: float | None = None) -> tuple[str, dict]:
    req = JobRequest.model_validate(body)
    job_id = secrets.token_hex(8)
    limits = JobLimits(memory_mb=256, pids=64, disk_mb=32, timeout_s=timeout_s)
    record = JobRecord(id=job_id, owner="tester", limits=limits, created_at=time.time(), command=req.command)
    spec = jobspec.standard_spec(record, req, None, 1_000_321, Path("/agent/jobs") / job_id,
                                 Path("/agent/work") / job_id, cgroups.CgroupLimits(memory_mb=256, pids=66))
    name = PREFIX + job_id
    return name, {"v": 1, "slurm_job_name": name, "job_name_prefix": PREFIX, "spec": spec.to_json_dict(),
                  "runtime": None, "gpus": gpus, "grace_s": 1, "timeout_s": timeout_s,
                  "max_output_bytes": 1 << 20}


def run(cluster: SlurmCluster, place: Path, body: dict[str, Any], gpus: int = 0, timeout_s: float | None = None,
        cancel_after: str | None = None, when_ready: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """srun the node side with a signed spec; with `cancel_after`, scancel the Slurm job once
    that text has come out of the job; `when_ready(job id)` runs once the job printed "ready"."""
    name, payload = make_payload(body, gpus, timeout_s)
    argv = ["srun", f"--job-name={name}", "--export=NONE", "--chdir=/", "--mem=256", "--ntasks=1", "--time=2"]
    argv += [f"--gres=gpu:{gpus}"] if gpus else []
    argv += [sys.executable, "-m", "joblet_agent.node", "--key", str(place / "cluster.key"),
             "--root", str(place / "node")]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **cluster.env})
    threading.Thread(target=_feed, args=(proc, wire.envelope(signing.load_key(str(place / "cluster.key")), payload)),
                     daemon=True).start()
    reader, frames = wire.FrameReader(), []
    assert proc.stdout is not None
    while chunk := os.read(proc.stdout.fileno(), 65536):
        frames += reader.feed(chunk)
        if cancel_after and any(f["k"] == "out" and cancel_after in f["d"] for f in frames):
            cluster.run("scancel", f"--name={name}")
            cancel_after = None
        if when_ready and any(f["k"] == "out" and "ready" in f["d"] for f in frames):
            when_ready(payload["spec"]["job_id"])
            when_ready = None
    proc.wait(timeout=60)
    return frames


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.close()


def text(frames: list[dict[str, Any]], stream: str = "stdout") -> str:
    return "".join(f["d"] for f in frames if f["k"] == "out" and f["s"] == stream)


def status(frames: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [f["event"] for f in frames if f["k"] == "status" and f["event"]["event"] == kind]
    assert found, frames
    return found[-1]


def test_a_job_runs_in_the_production_sandbox_and_streams_back(cluster, place):
    frames = run(cluster, place, {"command": ["sh", "-c", "echo out; echo err >&2; id -u; ls /dev; "
                                              "echo kept > /work/result.txt; exit 7"]})
    assert frames[0]["k"] == "hello" and frames[0]["node"] == cluster.node and frames[0]["slurm_job_id"]
    assert text(frames).split("\n")[:2] == ["out", "1000321"] and text(frames, "stderr") == "err\n"
    assert "fakegpu" not in text(frames), "a job without GPUs sees none"
    assert status(frames, "exit")["exit_code"] == 7
    files = [f for f in frames if f["k"] == "file"]
    assert [(f["p"], base64.b64decode(f["d"])) for f in files] == [("result.txt", b"kept\n")]
    assert frames[-1]["k"] == "end" and frames[-1]["usage"]["cpu_s"] >= 0 and frames[-1]["stop"] is None
    assert not node_leftovers(place / "node")


def device_rules(place: Path, job_id: str) -> list[str]:
    parent = "jnb-" + __import__("hashlib").sha1(str((place / "node").resolve()).encode()).hexdigest()[:8]
    path = Path(f"/sys/fs/cgroup/devices/{parent}/job-{job_id}/devices.list")
    return path.read_text().split("\n") if path.parent.parent.parent.is_dir() else ["no v1 devices hierarchy"]


def test_a_gpu_job_sees_only_its_device_and_cuda_visible_devices(cluster, place):
    rules: list[str] = []
    script = "ls /dev; echo CUDA=$CUDA_VISIBLE_DEVICES; cat /dev/fakegpu0 /dev/fakegpu1; echo ready; sleep 1"
    frames = run(cluster, place, {"command": ["sh", "-c", script]}, gpus=1,
                 when_ready=lambda job_id: rules.extend(device_rules(place, job_id)))
    if rules != ["no v1 devices hierarchy"]:  # v1: the device cgroup lets the job open its GPU only
        assert "c 195:0 rw" in rules and not any(r.startswith("c 195:1") or r.startswith("a") for r in rules), rules
    assert frames[0]["gpus"] == [0] and frames[0]["devices"] == ["fakegpu0"]
    listing = text(frames).split("\n")
    assert "fakegpu0" in listing and "fakegpu1" not in listing and "CUDA=0" in listing
    errors = text(frames, "stderr")
    assert "fakegpu0: No such device or address" in errors, errors  # opened: no driver behind it
    assert "fakegpu1: No such file or directory" in errors, errors
    assert not node_leftovers(place / "node")


def test_scancel_stops_the_job_with_sigterm_first_and_leaves_nothing(cluster, place):
    script = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done"
    frames = run(cluster, place, {"command": ["sh", "-c", script]}, cancel_after="ready")
    assert "got TERM" in text(frames)
    assert frames[-1]["k"] == "end" and frames[-1]["stop"] == "stopped", frames[-3:]
    assert not node_leftovers(place / "node")


def test_the_timeout_is_enforced_on_the_node(cluster, place):
    frames = run(cluster, place, {"command": ["sh", "-c", "echo start; sleep 60"]}, timeout_s=1)
    assert frames[-1]["stop"] == "timeout" and status(frames, "exit")["signal"] == 15
    assert not node_leftovers(place / "node")


def test_a_refused_runtime_ends_with_setup_before_anything_runs(cluster, place):
    name, payload = make_payload({"command": ["sh", "-c", "echo SHOULD-NOT-RUN"]})
    payload["runtime"] = {"name": "python-3.11", "build": "nope", "manifest_sha256": "0" * 64, "mounts": []}
    key = signing.load_key(str(place / "cluster.key"))
    out = subprocess.run(["srun", f"--job-name={name}", "--export=NONE", "--chdir=/", "--mem=256", sys.executable,
                          "-m", "joblet_agent.node", "--key", str(place / "cluster.key"), "--root",
                          str(place / "node"), "--runtimes", str(place / "no-runtimes")],
                         input=wire.envelope(key, payload), capture_output=True, env={**os.environ, **cluster.env},
                         timeout=60)
    frames = wire.FrameReader().feed(out.stdout)
    assert "not published" in status(frames, "setup_error")["message"]
    assert "SHOULD-NOT-RUN" not in text(frames) and frames[-1]["k"] == "end"
    assert not node_leftovers(place / "node")

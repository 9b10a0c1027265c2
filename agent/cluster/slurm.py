"""Slurm's own commands, as the agent uses them: srun places a job, sinfo sizes the cluster up,
squeue and scontrol say where a job is, scancel ends it.

The agent finds its cluster as those commands do: `SLURM_CONF` in its environment, else the
system's configuration. Every call has a timeout, and a command that fails says so in a message
that names it.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass

from ..config import SlurmConfig

NODE_OVERHEAD_MB = 64        # the node side's own interpreter and the sandbox's stage, beside the job
TIME_MARGIN_S = 60           # Slurm's time limit is a backstop behind the node side's own timeout
CALL_TIMEOUT_S = 30
# pending reasons after which Slurm will never start the job as asked
HOPELESS = ("PartitionConfig", "BadConstraints", "PartitionNodeLimit", "PartitionTimeLimit", "AccountNotAllowed",
            "InvalidAccount", "InvalidQOS", "QOSMaxGRESPerJob", "QOSMaxMemoryPerJob", "QOSMaxCpuPerJobLimit",
            "PartitionDown", "PartitionInactive", "JobHeldAdmin", "DependencyNeverSatisfied")


class SlurmError(Exception):
    """A Slurm command failed; the message names it and says what it printed."""


@dataclass(frozen=True)
class Ask:
    """What one job asks Slurm for."""

    cpus: int
    memory_mb: int
    gpus: int
    time_min: int | None

    @classmethod
    def of(cls, cpu_percent: int | None, memory_mb: int | None, gpus: int, timeout_s: float | None,
           grace_s: float) -> "Ask":
        time_min = math.ceil((timeout_s + grace_s + TIME_MARGIN_S) / 60) if timeout_s else None
        return cls(cpus=max(1, math.ceil((cpu_percent or 100) / 100)),
                   memory_mb=(memory_mb or 1024) + NODE_OVERHEAD_MB, gpus=gpus, time_min=time_min)


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int
    state: str


@dataclass(frozen=True)
class QueueEntry:
    job_id: str
    state: str
    reason: str
    node: str


def run(argv: list[str], env: dict[str, str], timeout: float = CALL_TIMEOUT_S) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"{argv[0]}: {exc}") from None
    if out.returncode != 0:
        raise SlurmError(f"{' '.join(argv[:2])}: {(out.stderr or out.stdout).strip()[:500]}")
    return out.stdout


def gpu_count(gres: str) -> int:
    """GPUs in an sinfo %G field: `gpu:2`, `gpu:a100:4(S:0-1)`, `gpu:2,mps:100`, `(null)`."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def nodes(env: dict[str, str], partition: str | None) -> list[Node]:
    argv = ["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%T"] + (["-p", partition] if partition else [])
    found = {}
    for line in run(argv, env).splitlines():
        fields = line.split("|")
        if len(fields) == 5 and fields[1].isdigit() and fields[2].isdigit():
            found[fields[0]] = Node(fields[0], int(fields[1]), int(fields[2]), gpu_count(fields[3]), fields[4])
    return list(found.values())


def refusal(ask: Ask, cluster: list[Node], partition: str | None) -> str | None:
    """Why no node of the cluster could ever run `ask`, in the user's terms; None if one could."""
    where = f"partition {partition}" if partition else "this cluster"
    if not cluster:
        return f"{where} has no nodes"
    if any(n.cpus >= ask.cpus and n.memory_mb >= ask.memory_mb and n.gpus >= ask.gpus for n in cluster):
        return None
    top = max(cluster, key=lambda n: n.gpus)
    if ask.gpus > top.gpus:
        return f"{ask.gpus} GPUs asked, the largest node of {where} has {top.gpus}"
    top = max(cluster, key=lambda n: n.memory_mb)
    if ask.memory_mb > top.memory_mb:
        return (f"{ask.memory_mb - NODE_OVERHEAD_MB} MB of memory asked ({ask.memory_mb} MB with the node side), "
                f"the largest node of {where} has {top.memory_mb} MB")
    top = max(cluster, key=lambda n: n.cpus)
    if ask.cpus > top.cpus:
        return f"{ask.cpus} CPUs asked, the largest node of {where} has {top.cpus}"
    return (f"no node of {where} has {ask.cpus} CPUs, {ask.memory_mb} MB and {ask.gpus} GPUs at once "
            f"(nodes: {', '.join(f'{n.name} {n.cpus}/{n.memory_mb}/{n.gpus}' for n in cluster[:8])})")


def srun_argv(config: SlurmConfig, job_name: str, ask: Ask, node_command: list[str]) -> list[str]:
    """One task on one node, a clean environment (the agent's own never reaches the node), `/`
    as the working folder (the agent's may not exist there), the site's own options last."""
    argv = ["srun", f"--job-name={job_name}", "--nodes=1", "--ntasks=1", f"--cpus-per-task={ask.cpus}",
            f"--mem={ask.memory_mb}", "--export=NONE", "--chdir=/"]
    if ask.gpus:
        argv.append(f"--gres=gpu:{ask.gpus}")
    if ask.time_min:
        argv.append(f"--time={ask.time_min}")
    if config.partition:
        argv.append(f"--partition={config.partition}")
    if config.account:
        argv.append(f"--account={config.account}")
    return argv + list(config.extra_args) + node_command


def queue(env: dict[str, str], names: list[str]) -> dict[str, QueueEntry]:
    """{job name: where it is} for the named jobs still in Slurm's queue (pending or running)."""
    if not names:
        return {}
    text = run(["squeue", "-h", "--name=" + ",".join(names), "-o", "%j|%i|%T|%r|%N"], env)
    out = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) == 5:
            out[fields[0]] = QueueEntry(fields[1], fields[2], fields[3], fields[4])
    return out


_FIELD = re.compile(r"(\w+)=(\S*)")


def job_state(env: dict[str, str], job_id: str) -> tuple[str, str]:
    """(JobState, Reason) of a job Slurm still remembers (MinJobAge), e.g. ("NODE_FAIL", "None")."""
    fields = dict(_FIELD.findall(run(["scontrol", "show", "job", "-o", job_id], env)))
    return fields.get("JobState", "UNKNOWN"), fields.get("Reason", "None")


def cancel(env: dict[str, str], job_id: str | None = None, name: str | None = None) -> None:
    """scancel by id (or by name, for a job whose id the agent has not learnt yet)."""
    target = [job_id] if job_id else [f"--name={name}"]
    run(["scancel", *target], env)


def kill_wait(env: dict[str, str]) -> float:
    """Slurm's KillWait: how long a cancelled step has between SIGTERM and SIGKILL."""
    match = re.search(r"^KillWait\s*=\s*(\d+)", run(["scontrol", "show", "config"], env), re.M)
    return float(match.group(1)) if match else 30.0


def pending_message(reason: str) -> str:
    """PENDING's `message`: Slurm's reason first, then what it means for the user."""
    meaning = {
        "None": "submitted, not yet considered by the scheduler",
        "Priority": "waiting in Slurm's queue: other jobs come first",
        "Resources": "waiting in Slurm's queue for free CPUs, memory or GPUs",
        "ReqNodeNotAvail": "waiting: the nodes that could run it are down, drained or reserved",
    }.get(reason.split(",")[0], "waiting in Slurm's queue")
    return f"{reason}: {meaning}"


def hopeless(reason: str) -> bool:
    return reason.split(",")[0] in HOPELESS

"""The node side: what a Slurm step runs on the compute node for one job of the agent.

    python -m joblet_agent.node --key KEYFILE --root NODE_ROOT [--runtimes DIR]

It refuses, before it makes anything, unless (1) it runs as root and (2) its stdin starts with a
spec whose MAC verifies with the cluster key, a root-only file, and (3) the spec names the Slurm
job it runs in. A Slurm user who is not the agent runs it as themselves (Slurm runs a user's
steps as that user) and is refused at (1); root-only key material stops anything but the agent at
(2); (3) stops a signed spec from being replayed into another job. Then it builds the job's
sandbox with the same launcher code as a local job and streams frames (wire.py) on its stdout.

"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from ..cluster import signing, wire
from .shared import STOP_SIGNALS

REFUSED_EXIT = 2


class Refused(Exception):
    """The node side will not take this job; nothing was made."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="joblet-node", description="joblet-nb node side (run by the agent's srun)")
    parser.add_argument("--key", required=True, help="the cluster key (root-only file)")
    parser.add_argument("--root", required=True, help="the node side's folder for job roots, files and cgroups")
    parser.add_argument("--runtimes", help="the shared folder of published runtimes")
    return parser.parse_args(argv)


def accept(args: argparse.Namespace, stdin: Any, env: dict[str, str]) -> dict[str, Any]:
    """The verified payload, or Refused; checks in the order of the module docstring."""
    if os.geteuid() != 0:
        raise Refused(f"it runs only as root, as the agent's Slurm step (this is uid {os.geteuid()}); "
                      f"a job of yours goes through the agent's API")
    try:
        key = signing.load_key(args.key)
        payload = wire.read_envelope(stdin, key)
    except (signing.ClusterKeyError, wire.SpecRefused) as exc:
        raise Refused(str(exc)) from None
    expected = payload.get("slurm_job_name")
    if not isinstance(expected, str) or env.get("SLURM_JOB_NAME") != expected:
        raise Refused(f"the spec is for Slurm job {expected!r}, this step runs in "
                      f"{env.get('SLURM_JOB_NAME')!r}")
    return payload


def refuse(message: str) -> int:
    """Told twice: on stderr for a person at a terminal, as a frame for the agent."""
    print(f"joblet-node: refusing: {message}", file=sys.stderr, flush=True)
    try:
        os.write(1, wire.frame("refused", message=message))
    except OSError:
        pass
    return REFUSED_EXIT


def main(argv: list[str] | None = None) -> int:
    # Slurm's SIGTERM (scancel, a node going down) waits, blocked, until the job can act on it:
    # a stop that comes while the node side starts is never lost and never half-done
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    args = parse_args(argv)
    try:
        # unbuffered: a session's input after the spec stays in the pipe for the sandbox
        payload = accept(args, os.fdopen(0, "rb", buffering=0, closefd=False), dict(os.environ))
    except Refused as exc:
        return refuse(str(exc))
    from .job import NodeJob  # the sandbox code loads only for an accepted job

    return NodeJob(payload, args.root, args.runtimes).run()

"""`executor: slurm`, put together at the agent's start: the cluster key, the node side's command
line, and a first word with Slurm. An agent that cannot reach its cluster does not start."""

from __future__ import annotations

import os
import sys

from . import signing, slurm
from .slurm_executor import SlurmExecutor
from ..config import AgentConfig
from ..errors import CannotIsolate
from ..paths import AgentPaths

KILL_WAIT_MARGIN_S = 2.0   # the node side's own SIGKILL and clean-up come before Slurm's


def slurm_executor(paths: AgentPaths, config: AgentConfig) -> SlurmExecutor:
    cfg = config.slurm
    node_root = os.path.realpath(cfg.node_root)
    if node_root == str(paths.root) or node_root.startswith(str(paths.root) + "/"):
        raise CannotIsolate(f"slurm.node_root {cfg.node_root} must lie outside the agent's root {paths.root} "
                            f"(the node side sweeps it, the agent sweeps its own)")
    key_file = cfg.key_file or str(paths.config / "cluster.key")
    try:
        key = signing.ensure_key(key_file)
    except signing.ClusterKeyError as exc:
        raise CannotIsolate(str(exc)) from None
    command = [cfg.python or sys.executable, "-m", "joblet_agent.node", "--key", key_file,
               "--root", node_root, "--runtimes", cfg.runtimes or str(paths.runtimes)]
    env = dict(os.environ)
    try:
        nodes = slurm.nodes(env, cfg.partition)
        kill_wait = slurm.kill_wait(env)
    except slurm.SlurmError as exc:
        raise CannotIsolate(f"executor: slurm, but Slurm does not answer ({exc}); the agent finds its "
                            f"cluster as Slurm's commands do (SLURM_CONF, else /etc/slurm)") from None
    if not nodes:
        where = f"partition {cfg.partition}" if cfg.partition else "the cluster"
        raise CannotIsolate(f"executor: slurm, but {where} has no nodes (sinfo shows none)")
    grace = max(0.5, min(config.stop_grace_s, kill_wait - KILL_WAIT_MARGIN_S))
    return SlurmExecutor(cfg, command, paths.cgroup_parent().removeprefix("jnb-"), env, key, grace,
                         config.max_output_mb << 20)

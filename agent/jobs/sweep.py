"""The start-up sweep: remove what an earlier life of the agent left that no live job holds.

It runs after restore.py has adopted the jobs whose holders still live (`keep`) and ended the
others. Job roots are mounted inside each job's own mount namespace, so a crash normally leaves no
host mount; the sweep still unmounts anything found below the agent's jobs folder, removes the
cgroups under this agent's parent and the jobs folder's entries that belong to no kept job, and
srun's files of the jobs an earlier life placed through Slurm (restore.py cancelled them). With
bridge networking it removes the ports of jobs not kept, and the bridge and its nftables table too
when no kept job is on it.
"""

from __future__ import annotations

import os
import shutil

from ..fs import remove_tree
from ..network.bridge import NetworkManager
from ..paths import AgentPaths
from ..sandbox import cgroups, libc
from ..sandbox.mounts import mounts_under


def sweep(paths: AgentPaths, driver: cgroups.CgroupDriver, keep: frozenset[str] = frozenset(),
          network: NetworkManager | None = None, keep_on_bridge: frozenset[str] = frozenset()) -> dict[str, int]:
    counts = {"mounts": 0, "cgroups": 0, "folders": 0}
    if network is not None:  # this agent's bridge ports, bridge and nftables table
        counts.update(network.sweep(keep_on_bridge))
    kept_dirs = {str(paths.jobs / job_id) for job_id in keep}
    for point, _opts in reversed(mounts_under(str(paths.jobs))):
        if point != str(paths.jobs) and not any(point == d or point.startswith(d + "/") for d in kept_dirs):
            try:
                libc.umount2(point, libc.MNT_DETACH)
                counts["mounts"] += 1
            except OSError:
                pass
    kept_cgroups = {f"job-{job_id}" for job_id in keep}
    for name in driver.leftovers():
        if name not in kept_cgroups:
            driver.open(name).remove()
            counts["cgroups"] += 1
    for entry in os.scandir(paths.jobs):
        if entry.name in keep:
            continue
        if entry.is_dir(follow_symlinks=False) and not os.path.ismount(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)
        counts["folders"] += 1
    remove_tree(str(paths.state / "slurm"))  # srun's files of jobs an earlier life of the agent placed
    return counts

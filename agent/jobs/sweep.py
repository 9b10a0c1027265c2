"""The start-up sweep: remove what a crashed agent left, and mark its unfinished jobs `lost`.

Job roots are mounted inside each job's own mount namespace, so a crash normally leaves no host
mount; the sweep still unmounts anything found below the agent's jobs folder, removes the job
cgroups under this agent's parent, and empties the jobs folder. With bridge networking it also
removes this agent's bridge (and any veth still on it) and its nftables table.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from ..contract import JobStatus
from ..fs import remove_tree
from ..models import JobRecord
from ..network.bridge import NetworkManager
from ..paths import AgentPaths
from ..sandbox import cgroups, libc
from ..sandbox.mounts import mounts_under
from .store import JobStore
from .verdict import Verdict


def sweep(paths: AgentPaths, driver: cgroups.CgroupDriver, store: JobStore,
          network: NetworkManager | None = None, cancel: Callable[[JobRecord], None] | None = None) -> dict[str, int]:
    """`cancel` ends what an unfinished job may still hold elsewhere (its Slurm job)."""
    counts = {"mounts": 0, "cgroups": 0, "folders": 0, "lost": 0}
    if network is not None:  # this agent's bridge ports, bridge and nftables table
        counts.update(network.sweep())
    for point, _opts in reversed(mounts_under(str(paths.jobs))):
        if point != str(paths.jobs):
            try:
                libc.umount2(point, libc.MNT_DETACH)
                counts["mounts"] += 1
            except OSError:
                pass
    for name in driver.leftovers():
        driver.open(name).remove()
        counts["cgroups"] += 1
    for entry in os.scandir(paths.jobs):
        if entry.is_dir(follow_symlinks=False) and not os.path.ismount(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)
        counts["folders"] += 1
    remove_tree(str(paths.state / "slurm"))  # srun's files of jobs an earlier life of the agent placed
    for record in store.load():
        if not record.status.finished:
            if cancel is not None:
                cancel(record)
            store.finish(record, Verdict(JobStatus.FAILED, "lost", "the agent restarted while the job ran"))
            counts["lost"] += 1
    return counts

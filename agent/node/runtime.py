"""A job's runtime, found and verified on the node that runs it.

Runtimes on a cluster live in one shared folder that every node mounts at the same path (the
agent's own runtimes folder, or `slurm.runtimes`): built once, on the agent's host, published by
one rename of a symlink. The agent names the build it verified (its version folder and the sha256
of its manifest); the node side mounts that runtime only if its own view of the shared folder
publishes exactly that build, the manifest digest matches, and the stat fingerprint of every entry
matches the manifest. A node that lacks the folder, lags behind a rebuild, or holds a changed tree
refuses the job before the user's code runs.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..builds import manifest as mf
from ..sandbox.spec import Mount
from .shared import NodeSetupError

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_BUILD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RuntimeMissing(NodeSetupError):
    """This node cannot run the job's runtime; the message names the node and the runtime."""


def mounts(ref: dict[str, Any], runtimes_dir: str, node: str) -> list[Mount]:
    """The read-only binds of the runtime `ref` names, or RuntimeMissing."""
    name, build, digest = str(ref.get("name")), str(ref.get("build")), ref.get("manifest_sha256")
    if not _NAME.match(name) or not _BUILD.match(build):
        raise RuntimeMissing(f"runtime reference {name!r}/{build!r} is not valid")
    where = f"runtime {name} (build {build}) on node {node}"
    expected = os.path.join(os.path.realpath(runtimes_dir), ".versions", name, build)
    found = os.path.realpath(os.path.join(runtimes_dir, name))
    if not os.path.isdir(found):
        raise RuntimeMissing(f"{where}: not published in {runtimes_dir} (is the shared runtimes folder mounted?)")
    if found != expected:
        raise RuntimeMissing(f"{where}: this node publishes build {os.path.basename(found)} instead")
    try:
        if mf.manifest_digest(found) != digest:
            raise RuntimeMissing(f"{where}: its manifest differs from the one the agent verified")
        mf.verify_stat(found, mf.load_manifest(found))
    except (OSError, ValueError, mf.TreeError) as exc:
        raise RuntimeMissing(f"{where}: failed verification: {exc}") from None
    binds = []
    for entry in ref.get("mounts", []):
        source, target = str(entry.get("source", "")), str(entry.get("target", ""))
        parts = source.split("/")
        if parts[0] != "isolated" or ".." in parts or not target.startswith("/"):
            raise RuntimeMissing(f"{where}: mount {source!r} -> {target!r} is not inside isolated/")
        # bound from a descriptor opened beneath isolated/ with no symlink on the way (rootfs.bind, init_root.c)
        binds.append(Mount(source="/".join(parts[1:]) or ".", target=target, readonly=True,
                           beneath=os.path.join(found, "isolated")))
    return binds

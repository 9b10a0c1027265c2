"""The builder sandbox (job type `runtime-build`): what a runtime's setup script sees.

DESIGN.md "Builder", made precise:
- the host's `/bin /lib /usr /etc /var /home /root` and `/opt`, read-only (every bind nosuid,nodev);
- every path the agent owns is left out by its real, configured location (its root, state,
  logs, config, tokens, the client config it wrote, a --config file), wherever it lives: a host tree
  that contains one is not bound whole but entry by entry, down to the excluded path, which is
  simply not there (`host_view`). Nothing is excluded by a folder's name;
- of the agent's root only this build's staging folder is mounted, read-write, at the runtime's
  install prefix `/opt/runtimes/<name>` (the same path production jobs mount it at, so that paths
  baked in by installers, like a venv's, stay right);
- masks over host secrets: shadow and gshadow, ssh host keys, `/root/.ssh`, `/home/*/.ssh`, sudoers,
  `/etc/ssl/private`;
- the per-job unprivileged uid, a private tmpfs `/work` and `/tmp`, the same namespaces, cgroups,
  no_new_privs and capability drop as production, the builder seccomp profile, and the network the
  runtime asks for ("bridge" to reach the package registries, when the agent has it).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from ..contract import JobType
from ..paths import AgentPaths
from ..sandbox.cgroups import CgroupLimits
from ..sandbox.spec import BASE_PATH, Mount, SandboxSpec, WorkFile

HOST_TREES = ("/usr", "/etc", "/var", "/home", "/root", "/opt")
SECRET_MASKS = (
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers", "/etc/sudoers.d",
    "/etc/ssl/private", "/etc/ssh/ssh_host_*key", "/root/.ssh", "/home/*/.ssh", "/root/.gnupg",
    "/home/*/.gnupg", "/etc/security/opasswd",
)


def excluded_paths(paths: AgentPaths, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The agent's own paths, real and resolved: its root, everything `private()` names (which may
    be configured outside the root), its tokens and config, and `extra` (client config, --config)."""
    found: list[str | os.PathLike[str]] = [paths.root, *paths.private(), paths.tokens, paths.config, *extra]
    out: list[str] = []
    for p in found:
        real = os.path.realpath(p)
        if real not in out:
            out.append(real)
    return out


def host_view(trees: tuple[str, ...], excluded: list[str]) -> list[Mount]:
    """Read-only binds that show `trees` as the host has them, minus every excluded path."""
    out: list[Mount] = []
    for tree in trees:
        if os.path.isdir(tree):
            _plan(os.path.realpath(tree), tree, excluded, out)
    return out


def _plan(source: str, target: str, excluded: list[str], out: list[Mount]) -> None:
    if any(source == e or source.startswith(e + "/") for e in excluded):
        return  # an agent path (or inside one): not shown at all
    if not any(e.startswith(source.rstrip("/") + "/") for e in excluded):
        out.append(Mount(source=source, target=target, readonly=True))
        return
    # an agent path lies below: show this folder entry by entry, down to it
    try:
        entries = sorted(os.scandir(source), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        child_target = f"{target.rstrip('/')}/{entry.name}"
        real = os.path.realpath(entry.path)
        if entry.is_symlink():
            if not os.path.exists(real):
                continue
            # shown as what it points to, unless that is (or holds) an agent path
            if any(real == e or real.startswith(e + "/") or e.startswith(real.rstrip("/") + "/") for e in excluded):
                continue
        if os.path.isdir(real):
            _plan(real, child_target, excluded, out)
        elif os.path.isfile(real):
            if not any(real == e for e in excluded):
                out.append(Mount(source=real, target=child_target, readonly=True))


def secret_masks() -> list[str]:
    out: list[str] = []
    for pattern in SECRET_MASKS:
        out += sorted(p for p in glob.glob(pattern) if not os.path.islink(p))
    return out


@dataclass
class BuildPlan:
    """What one build needs from the agent to make the builder spec."""

    name: str
    build_id: str
    prefix: str                 # /opt/runtimes/<name>
    staging: str                # host folder, owned by the build uid, mounted read-write at `prefix`
    setup_name: str             # the setup script's file name
    files: dict[str, bytes]     # runtime.yml, the setup script and helpers: written into /work
    packages: list[str]
    disk_mb: int
    network: str


def builder_spec(paths: AgentPaths, plan: BuildPlan, uid: int, gid: int, cgroup_limits: CgroupLimits,
                 extra_private: list[str] | tuple[str, ...] = (), resolv_conf: str | None = None) -> SandboxSpec:
    """`resolv_conf`: a root-owned file with the resolvers a bridge job can reach, bound over the
    host's /etc/resolv.conf (which may name a loopback resolver the build's namespace cannot reach)."""
    excluded = excluded_paths(paths, extra_private)
    # the prefix is carved out of the host's /opt: /opt is then laid out entry by entry
    view = host_view(HOST_TREES, excluded + [os.path.realpath("/opt") + plan.prefix[len("/opt"):]])
    mounts = [m for m in view if m.target != "/usr"]  # build_root binds /usr itself
    if resolv_conf and plan.network != "none" and os.path.isfile("/etc/resolv.conf") \
            and not os.path.islink("/etc/resolv.conf"):
        mounts.append(Mount(source=resolv_conf, target="/etc/resolv.conf", readonly=True))
    mounts.append(Mount(source=plan.staging, target=plan.prefix, readonly=False))
    env = {
        "PATH": BASE_PATH, "HOME": "/work", "USER": "builder", "LOGNAME": "builder", "LANG": "C.UTF-8",
        "TMPDIR": "/tmp", "RUNTIME_NAME": plan.name, "RUNTIME_PREFIX": plan.prefix,
        "RUNTIME_PACKAGES": " ".join(plan.packages), "RUNTIME_NETWORK": plan.network,
        "JOB_ID": plan.build_id,
    }
    return SandboxSpec(
        job_id=plan.build_id, job_type=JobType.RUNTIME_BUILD, root_dir=str(paths.jobs / plan.build_id),
        argv=["/bin/sh", "-eu", f"/work/{plan.setup_name}"], env=env, uid=uid, gid=gid,
        hostname="joblet-builder", disk_mb=plan.disk_mb, mounts=mounts, masks=secret_masks(),
        etc_files={}, uploads=[WorkFile(name, content, 0o755 if name == plan.setup_name else 0o644)
                               for name, content in plan.files.items()],
        cgroup_limits=cgroup_limits, network=plan.network, artifacts_dir=None,
    )

"""The reference: bubblewrap with the agent's namespaces and mounts."""

from __future__ import annotations

import subprocess

from .agent import TRUE

BWRAP_BASE = [
    "bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
    "--die-with-parent", "--new-session",
    "--size", str(256 << 20), "--tmpfs", "/",          # the agent's job root is a 256 MB tmpfs
    "--ro-bind", "/usr", "/usr",
    "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
    "--proc", "/proc", "--dev", "/dev",
    "--size", str(256 << 20), "--tmpfs", "/tmp",
    "--dir", "/work",
    "--cap-drop", "ALL", "--hostname", "joblet",
]
# bwrap 0.8 refuses --uid/--gid without a user namespace, even as root.
AS_JOB_USER = ["--unshare-user", "--uid", "1000", "--gid", "1000"]


def bwrap(argv: list[str], *, userns: bool = True, extra: list[str] | None = None) -> list[str]:
    """The bwrap command line that runs `argv` (with `extra` options before it, e.g. more binds)."""
    return BWRAP_BASE + (AS_JOB_USER if userns else []) + (extra or []) + ["--chdir", "/work"] + argv


BWRAP = bwrap([TRUE])
BWRAP_NOUSERNS = bwrap([TRUE], userns=False)


def run_plain(_marks: dict[str, float]) -> None:
    subprocess.run([TRUE], check=True)


def run_bwrap(_marks: dict[str, float]) -> None:
    subprocess.run(BWRAP, check=True)


def run_bwrap_nouserns(_marks: dict[str, float]) -> None:
    subprocess.run(BWRAP_NOUSERNS, check=True)

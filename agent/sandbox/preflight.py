"""Refuse to start where isolation is impossible, naming what is missing: every check the sandbox
needs of the host, made once when the agent starts."""

from __future__ import annotations

import logging
import os
import shutil

from ..errors import CannotIsolate
from . import builtfrom, cgroups, holderplan, initplan, libc
from .namespaces import ALL_NAMESPACES
from .spec import BASE_PATH

NAMESPACE_FILES = ("mnt", "uts", "ipc", "net", "pid", "cgroup")
log = logging.getLogger(__name__)


def check(driver_parent: str) -> cgroups.CgroupDriver:
    """Every check that fails is listed, so one run tells an operator all that is missing."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("the agent must run as root (it creates namespaces, mounts and cgroups)")
    missing_ns = [n for n in NAMESPACE_FILES if not os.path.exists(f"/proc/self/ns/{n}")]
    if missing_ns:
        problems.append(f"the kernel lacks namespaces: {', '.join(missing_ns)}")
    elif os.geteuid() == 0 and not _can_unshare():
        problems.append("unshare of mount/UTS/IPC/net/PID/cgroup namespaces is refused here "
                        "(a container without CAP_SYS_ADMIN?)")
    driver = None
    try:
        driver = cgroups.detect(driver_parent)
        if driver.missing():
            problems.append(f"cgroup {driver.version} controllers missing: {', '.join(driver.missing())}")
    except cgroups.CgroupError as exc:
        problems.append(f"no usable cgroup hierarchy: {exc}")
    if shutil.which("python3", path=BASE_PATH) is None:
        problems.append("no python3 under /usr/bin or /bin: script jobs need the base system's python3")
    if not os.access(initplan.BINARY, os.X_OK):
        problems.append(f"{initplan.BINARY} is missing: every job's PID 1 (scripts/install.sh builds it)")
    elif builtfrom.stale(initplan.BINARY):
        problems.append(f"{initplan.BINARY} was built from other sources than this agent's (its stamp "
                        f"{builtfrom.stamp_path(initplan.BINARY)} does not match): run scripts/install.sh")
    if not holderplan.available():
        log.warning("%s is missing or was built from other sources than this agent's: every job keeps the "
                    "Python holder, a few MB more a running job (scripts/install.sh builds it)", holderplan.BINARY)
    if problems:
        raise CannotIsolate("cannot isolate jobs on this host:\n  - " + "\n  - ".join(problems))
    assert driver is not None
    return driver


def _can_unshare() -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            libc.unshare(ALL_NAMESPACES)
            os._exit(0)
        except OSError:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

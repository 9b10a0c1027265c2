"""Job cgroups behind one small interface: limits, joining, usage, OOM report, kill and removal.

A `CgroupDriver` makes and finds this agent's job cgroups under its own parent (``jnb-...``, owned
by one agent, so several agents coexist and a start-up sweep only ever touches its own jobs); a
`JobCgroup` is one job's cgroup, a directory in each hierarchy it uses (v1: several, v2: one).
The two backends, `v1.py` and `v2.py`, implement the abstract parts; `detect.py` picks one.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from ...fs import COMPONENT
from . import files
from .files import CgroupError

CPU_PERIOD_US = 100_000
_PARENT = re.compile(r"^jnb-[A-Za-z0-9_.-]{1,123}$")
_GONE = (errno.ENOENT, errno.ENODEV)  # a cgroup file read, or a directory removed, as its cgroup goes
_SETTLE_S = 2.0  # how long remove() keeps retrying rmdir while killed processes finish exiting


@dataclass
class CgroupLimits:
    """Resource limits of one job; None means unlimited."""

    cpu_percent: int | None = None  # 100 = one full CPU; 50 = half; 200 = two CPUs
    memory_mb: int | None = None  # hard limit, no swap beyond it
    pids: int | None = None
    io_bps: int | None = None  # read and write bytes/s on io_device; None or 0 = unlimited
    io_device: tuple[int, int] | None = None  # (major, minor) of the whole disk behind the root
    # the only device nodes the job may open or make: (type "c"/"b", major, minor; -1 = any);
    # None leaves devices alone (v2 has no devices file: its device control is a BPF program)
    devices: tuple[tuple[str, int, int], ...] | None = None

    def check(self) -> None:
        """Refuse values the kernel would reject or misread (e.g. a quota of 0)."""
        for field in ("cpu_percent", "memory_mb", "pids"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise CgroupError(f"limit {field}={value!r} must be a positive integer")
        if self.io_bps is not None and (not isinstance(self.io_bps, int) or self.io_bps < 0):
            raise CgroupError(f"limit io_bps={self.io_bps!r} must be a non-negative integer")
        if self.io_bps and self.io_device is None:
            raise CgroupError("limit io_bps needs io_device (the disk could not be determined)")

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> "CgroupLimits":
        """Back from the spec's JSON, where the device pair became a list."""
        device, devices = data.get("io_device"), data.get("devices")
        return cls(**{**data, "io_device": tuple(device) if device is not None else None,
                      "devices": tuple((str(t), int(a), int(b)) for t, a, b in devices) if devices is not None else None})

    @property
    def cpu_quota_us(self) -> int | None:
        return None if self.cpu_percent is None else self.cpu_percent * CPU_PERIOD_US // 100

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory_mb is None else self.memory_mb * 1024 * 1024


@dataclass
class CgroupUsage:
    cpu_s: float
    memory_peak_bytes: int


class JobCgroup(ABC):
    """One job's cgroup: a directory per hierarchy used (v1: several, v2: one)."""

    def __init__(self, name: str, dirs: dict[str, str]):
        self.name = name
        self._ctl = dirs  # controller -> this job's directory in the hierarchy holding it
        self.dirs = list(dict.fromkeys(dirs.values()))  # distinct directories, in a stable order
        self.applied: CgroupLimits | None = None  # what `apply` wrote last through this object

    def procs_files(self) -> list[str]:
        """Every cgroup.procs a process writes its pid into to join (the init does this first)."""
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def join(self, pid: int) -> None:
        for path in self.procs_files():
            files.write(path, str(pid))

    def rename(self, name: str) -> "JobCgroup":
        """The same cgroup, processes and all, under a new name in every hierarchy (a cgroup made
        and joined ahead of time takes its job's name when the job comes)."""
        if not COMPONENT.match(name):
            raise CgroupError(f"invalid job cgroup name {name!r}")
        dirs = {c: os.path.join(os.path.dirname(d), name) for c, d in self._ctl.items()}
        for old in self.dirs:
            new = os.path.join(os.path.dirname(old), name)
            try:
                os.rename(old, new)
            except OSError as e:
                raise CgroupError(f"cannot rename {old} to {name}: {e.strerror}") from e
        renamed = type(self)(name, dirs)
        renamed.applied = self.applied
        return renamed

    def pids(self) -> list[int]:
        """Union over all hierarchies, so a process that joined only some of them is still seen."""
        found: set[int] = set()
        for path in self.procs_files():
            try:
                with open(path) as f:
                    found.update(int(x) for x in f.read().split())
            except OSError as e:
                if e.errno not in _GONE:  # removed, or being removed, by another meanwhile
                    raise
        return sorted(found)

    def kill(self) -> None:
        """SIGKILL everything; frozen first so nothing forks a survivor between listing and kill.
        Another may remove the cgroup meanwhile (the launcher's watch, stagewatch.py, and an
        agent's sweep or stop can both come for a dead stage's): a directory of it gone from under
        a step means its processes were killed already, and is not an error."""
        if not any(os.path.isdir(d) for d in self.dirs):
            return
        try:
            if self._kill_native():
                return
            frozen = self._freeze(True)
        except CgroupError:
            if not self._removed_meanwhile():
                raise
            frozen = False  # its freezer went with it: kill what is still listed, unfrozen
        try:
            for pid in self.pids():
                self._kill_member(pid)
        finally:
            if frozen:
                try:
                    self._freeze(False)  # SIGKILL is acted on only once thawed
                except CgroupError:
                    if not self._removed_meanwhile():
                        raise

    def _removed_meanwhile(self) -> bool:
        return not all(os.path.isdir(d) for d in self.dirs)

    def _kill_member(self, pid: int) -> None:
        """SIGKILL `pid` through a pidfd, and only while it is in this cgroup: a PID read from
        cgroup.procs may belong to another process by the time it is used. The membership read
        happens while the pidfd holds the process; if that process has ended since, the read may
        show another's, but the signal then goes to nobody."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            if self.holds(pid):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError):
            pass
        finally:
            os.close(pidfd)

    def holds(self, pid: int) -> bool:
        """Whether process `pid` is in this cgroup now, by its own /proc/<pid>/cgroup."""
        with open(f"/proc/{pid}/cgroup") as f:
            paths = [line.rstrip("\n").split(":", 2)[-1] for line in f]
        return any(self.name in p.split("/") for p in paths)

    def remove(self) -> None:
        """Kill leftovers and rmdir every directory, deepest first; already gone is fine."""
        if self.pids():
            self.kill()
        deadline = time.monotonic() + _SETTLE_S
        for top in self.dirs:
            if not os.path.isdir(top):
                continue
            subdirs = [r for r, _, _ in os.walk(top, topdown=False)]
            for d in subdirs:
                while True:
                    try:
                        files.rmdir(d)
                        break
                    except OSError as e:
                        if e.errno in _GONE:
                            break
                        if e.errno != errno.EBUSY or time.monotonic() > deadline:
                            raise CgroupError(f"cannot remove {d}: {e.strerror}") from e
                        self.kill()  # dying processes still hold it; also catches late joiners
                        time.sleep(0.01)

    def _kill_native(self) -> bool:
        """Kill in one kernel step if possible (v2 cgroup.kill); False if not available."""
        return False

    @abstractmethod
    def _freeze(self, frozen: bool) -> bool:
        """Freeze or thaw; False if there is no freezer (then kill without it)."""

    @abstractmethod
    def apply(self, limits: CgroupLimits) -> None: ...

    @abstractmethod
    def usage(self) -> CgroupUsage: ...

    @abstractmethod
    def oom_killed(self) -> bool: ...

    @abstractmethod
    def usage_files(self) -> dict[str, str]:
        """The files `usage` and `oom_killed` read, by role (cpu_stat or cpu_ns, peak, events; v1's
        failcnt and limit): a holder in C opens them while it is Python and reads them at the end."""

    def _path(self, controller: str, filename: str) -> str:
        return os.path.join(self._ctl[controller], filename)

    @staticmethod
    def _write_io(path: str, line: str, device: tuple[int, int]) -> None:
        """The kernel refuses partitions and unknown devices: name the device, not just the file."""
        try:
            files.write(path, line)
        except CgroupError as e:
            raise CgroupError(
                f"io limit refused for device {device[0]}:{device[1]} ({e}); "
                "it must be a whole disk known to the block layer"
            ) from e


class CgroupDriver(ABC):
    """Makes and finds this agent's job cgroups under its own parent."""

    version: str
    needed: tuple[str, ...]
    optional: tuple[str, ...] = ()  # used where the host has them, never a reason to refuse
    _job_class: type[JobCgroup]

    def __init__(self, parent: str, hierarchies: dict[str, str]):
        if not _PARENT.match(parent):
            raise CgroupError(f"cgroup parent {parent!r} must look like jnb-<id>")
        self.parent = parent
        self._roots = hierarchies  # controller -> mount (or v2 root) holding it

    @abstractmethod
    def missing(self) -> list[str]:
        """Needed controllers this host does not offer; non-empty means refuse to start."""

    def _parents(self) -> dict[str, str]:
        roots = self._roots.items()
        return {c: os.path.join(r, self.parent) for c, r in roots if c in self.needed or c in self.optional}

    @staticmethod
    def _ensure_dir(path: str) -> None:
        if os.path.isdir(path):
            return
        try:
            files.mkdir(path)
        except FileExistsError:
            pass
        except OSError as e:
            raise CgroupError(f"cannot create {path}: {e.strerror}") from e

    def open(self, name: str) -> JobCgroup:
        if not COMPONENT.match(name):
            raise CgroupError(f"invalid job cgroup name {name!r}")
        dirs = {c: os.path.join(p, name) for c, p in self._parents().items()}
        return self._job_class(name, dirs)

    def create(self, name: str, limits: CgroupLimits) -> JobCgroup:
        job = self.open(name)
        if self.missing():
            absent = ", ".join(self.missing())
            raise CgroupError(f"cgroup {self.version} controllers missing: {absent}")
        self._prepare_parent()
        made: list[str] = []
        try:
            for d in job.dirs:
                try:
                    files.mkdir(d)
                except OSError as e:
                    raise CgroupError(f"cannot create {d}: {e.strerror}") from e
                made.append(d)
            job.apply(limits)
        except BaseException:
            for d in reversed(made):  # only what this call made: an existing cgroup is not ours
                try:
                    files.rmdir(d)
                except OSError:
                    pass
            raise
        return job

    def leftovers(self) -> list[str]:
        names: set[str] = set()
        for p in dict.fromkeys(self._parents().values()):
            try:
                names.update(e.name for e in os.scandir(p) if e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                continue
        return sorted(names)

    def limit_parent(self, limits: CgroupLimits) -> None:
        """CgroupLimits on the parent bound all of this agent's jobs together (the kernel applies a
        parent's limits to the sum of its children): many jobs, each within its own limits, still
        cannot take the whole host."""
        self._prepare_parent()
        self._job_class(self.parent, self._parents()).apply(limits)

    def remove_parent(self) -> None:
        """Remove the parent once no job cgroup is left in any hierarchy; otherwise leave it."""
        if self.leftovers():
            return
        for p in dict.fromkeys(self._parents().values()):
            try:
                files.rmdir(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise CgroupError(f"cannot remove {p}: {e.strerror}") from e

    @abstractmethod
    def _prepare_parent(self) -> None:
        """Make the parent (idempotent) so that job cgroups under it get every controller."""

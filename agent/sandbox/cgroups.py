"""Job cgroups: CPU, memory, pids and I/O limits, usage, OOM report and kill, on cgroup v1 or v2.

Hosts differ: older ones give the controllers to cgroup v1 hierarchies (one mount per controller or
co-mounted groups), current ones run pure cgroup v2. The version is detected from what is mounted,
never assumed, and both backends share one small interface so the agent codes against neither.

Layout: every job cgroup is ``<parent>/<name>`` in each hierarchy used; ``parent`` (``jnb-...``) is
owned by one agent, so several agents coexist and a start-up sweep only ever touches its own jobs.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CPU_PERIOD_US = 100_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PARENT = re.compile(r"^jnb-[A-Za-z0-9_.-]{1,123}$")
_SETTLE_S = 2.0  # how long remove() keeps retrying rmdir while killed processes finish exiting


class CgroupError(Exception):
    """A cgroup could not be set up, read or removed; the message names the file or device."""


@dataclass
class CgroupLimits:
    """Resource limits of one job; None means unlimited."""

    cpu_percent: int | None = None  # 100 = one full CPU; 50 = half; 200 = two CPUs
    memory_mb: int | None = None  # hard limit, no swap beyond it
    pids: int | None = None
    io_bps: int | None = None  # read and write bytes/s on io_device; None or 0 = unlimited
    io_device: tuple[int, int] | None = None  # (major, minor) of the whole disk behind the root

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
        device = data.get("io_device")
        return cls(**{**data, "io_device": tuple(device) if device is not None else None})

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


# --- file helpers: every failure names the file, so a refusal message is actionable ---


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise CgroupError(f"cannot read {path}: {e.strerror}") from e


def _write(path: str, value: str) -> None:
    """One write(2) per value, and no O_CREAT: only the kernel makes cgroup files."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as e:
        raise CgroupError(f"cannot open {path}: {e.strerror}") from e
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def _keyvals(text: str) -> dict[str, int]:
    """Parse 'key value' lines (cpu.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _mkdir(path: str) -> None:
    """Make a cgroup directory (the kernel populates it). A seam: tests swap in a fake kernel."""
    os.mkdir(path)


def _rmdir(path: str) -> None:
    """Remove a cgroup directory (cgroupfs allows rmdir despite its files). A seam like _mkdir."""
    os.rmdir(path)


def _wait_for(check: Callable[[], bool], timeout_s: float = 1.0) -> bool:
    """Poll briefly for a kernel state change (freezing is asynchronous)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# --- the job cgroup ---


class JobCgroup(ABC):
    """One job's cgroup: a directory per hierarchy used (v1: several, v2: one)."""

    def __init__(self, name: str, dirs: dict[str, str]):
        self.name = name
        self._ctl = dirs  # controller -> this job's directory in the hierarchy holding it
        self.dirs = list(dict.fromkeys(dirs.values()))  # distinct directories, in a stable order

    def procs_files(self) -> list[str]:
        """Every cgroup.procs a process writes its pid into to join (the init does this first)."""
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def join(self, pid: int) -> None:
        for path in self.procs_files():
            _write(path, str(pid))

    def rename(self, name: str) -> "JobCgroup":
        """The same cgroup, processes and all, under a new name in every hierarchy (a cgroup made
        and joined ahead of time takes its job's name when the job comes)."""
        if not _NAME.match(name):
            raise CgroupError(f"invalid job cgroup name {name!r}")
        dirs = {c: os.path.join(os.path.dirname(d), name) for c, d in self._ctl.items()}
        for old in self.dirs:
            new = os.path.join(os.path.dirname(old), name)
            try:
                os.rename(old, new)
            except OSError as e:
                raise CgroupError(f"cannot rename {old} to {name}: {e.strerror}") from e
        return type(self)(name, dirs)

    def pids(self) -> list[int]:
        """Union over all hierarchies, so a process that joined only some of them is still seen."""
        found: set[int] = set()
        for path in self.procs_files():
            try:
                with open(path) as f:
                    found.update(int(x) for x in f.read().split())
            except FileNotFoundError:
                continue
        return sorted(found)

    def kill(self) -> None:
        """SIGKILL everything; frozen first so nothing forks a survivor between listing and kill."""
        if not any(os.path.isdir(d) for d in self.dirs) or self._kill_native():
            return
        frozen = self._freeze(True)
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                self._freeze(False)  # SIGKILL is acted on only once thawed

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
                        _rmdir(d)
                        break
                    except FileNotFoundError:
                        break
                    except OSError as e:
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

    def _path(self, controller: str, filename: str) -> str:
        return os.path.join(self._ctl[controller], filename)

    @staticmethod
    def _write_io(path: str, line: str, device: tuple[int, int]) -> None:
        """The kernel refuses partitions and unknown devices: name the device, not just the file."""
        try:
            _write(path, line)
        except CgroupError as e:
            raise CgroupError(
                f"io limit refused for device {device[0]}:{device[1]} ({e}); "
                "it must be a whole disk known to the block layer"
            ) from e


class _V1Job(JobCgroup):
    def apply(self, limits: CgroupLimits) -> None:
        limits.check()
        _write(self._path("cpu", "cpu.cfs_period_us"), str(CPU_PERIOD_US))
        _write(self._path("cpu", "cpu.cfs_quota_us"), str(limits.cpu_quota_us or -1))
        mem = str(limits.memory_bytes or -1)
        memsw = self._path("memory", "memory.memsw.limit_in_bytes")
        has_memsw = os.path.exists(memsw)
        if has_memsw:  # memsw must stay >= the limit: open it first, then pin it to the limit
            _write(memsw, "-1")
        _write(self._path("memory", "memory.limit_in_bytes"), mem)
        if has_memsw:
            _write(memsw, mem)
        _write(self._path("pids", "pids.max"), str(limits.pids or "max"))
        if limits.io_device is not None:
            dev = f"{limits.io_device[0]}:{limits.io_device[1]}"
            for f in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
                line = f"{dev} {limits.io_bps or 0}"
                self._write_io(self._path("blkio", f), line, limits.io_device)

    def usage(self) -> CgroupUsage:
        ns = int(_read(self._path("cpuacct", "cpuacct.usage")))
        peak = int(_read(self._path("memory", "memory.max_usage_in_bytes")))
        return CgroupUsage(cpu_s=ns / 1e9, memory_peak_bytes=peak)

    def oom_killed(self) -> bool:
        stats = _keyvals(_read(self._path("memory", "memory.oom_control")))
        if "oom_kill" in stats:
            return stats["oom_kill"] > 0
        # Kernels before 4.13 lack the counter: a failed charge at the limit is the best evidence.
        failcnt = int(_read(self._path("memory", "memory.failcnt")))
        limit = int(_read(self._path("memory", "memory.limit_in_bytes")))
        peak = int(_read(self._path("memory", "memory.max_usage_in_bytes")))
        return failcnt > 0 and peak >= limit

    def _freeze(self, frozen: bool) -> bool:
        state = self._path("freezer", "freezer.state")
        if not os.path.exists(state):
            return False
        want = "FROZEN" if frozen else "THAWED"
        _write(state, want)
        if frozen:  # FREEZING until every task has stopped; thawing needs no wait
            _wait_for(lambda: _read(state).strip() == want)
        return True


class _V2Job(JobCgroup):
    def apply(self, limits: CgroupLimits) -> None:
        limits.check()
        _write(self._path("cpu", "cpu.max"), f"{limits.cpu_quota_us or 'max'} {CPU_PERIOD_US}")
        _write(self._path("memory", "memory.max"), str(limits.memory_bytes or "max"))
        swap = self._path("memory", "memory.swap.max")
        if os.path.exists(swap):  # absent when the kernel has no swap accounting
            _write(swap, "0" if limits.memory_bytes else "max")
        _write(self._path("pids", "pids.max"), str(limits.pids or "max"))
        if limits.io_device is not None:
            bps = limits.io_bps or "max"
            line = f"{limits.io_device[0]}:{limits.io_device[1]} rbps={bps} wbps={bps}"
            self._write_io(self._path("io", "io.max"), line, limits.io_device)

    def usage(self) -> CgroupUsage:
        usec = _keyvals(_read(self._path("cpu", "cpu.stat"))).get("usage_usec", 0)
        peak = self._path("memory", "memory.peak")  # since 5.19; before, the current value is all
        mem = peak if os.path.exists(peak) else self._path("memory", "memory.current")
        return CgroupUsage(cpu_s=usec / 1e6, memory_peak_bytes=int(_read(mem)))

    def oom_killed(self) -> bool:
        return _keyvals(_read(self._path("memory", "memory.events"))).get("oom_kill", 0) > 0

    def _kill_native(self) -> bool:
        path = os.path.join(self.dirs[0], "cgroup.kill")  # since 5.14
        if not os.path.exists(path):
            return False
        _write(path, "1")
        return True

    def _freeze(self, frozen: bool) -> bool:
        path = os.path.join(self.dirs[0], "cgroup.freeze")  # since 5.2
        if not os.path.exists(path):
            return False
        _write(path, "1" if frozen else "0")
        events = os.path.join(self.dirs[0], "cgroup.events")
        if frozen:
            _wait_for(lambda: _keyvals(_read(events)).get("frozen") == 1)
        return True


# --- drivers ---


class CgroupDriver(ABC):
    """Makes and finds this agent's job cgroups under its own parent."""

    version: str
    needed: tuple[str, ...]
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
        return {c: os.path.join(r, self.parent) for c, r in roots if c in self.needed}

    @staticmethod
    def _ensure_dir(path: str) -> None:
        if os.path.isdir(path):
            return
        try:
            _mkdir(path)
        except FileExistsError:
            pass
        except OSError as e:
            raise CgroupError(f"cannot create {path}: {e.strerror}") from e

    def open(self, name: str) -> JobCgroup:
        if not _NAME.match(name):
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
                    _mkdir(d)
                except OSError as e:
                    raise CgroupError(f"cannot create {d}: {e.strerror}") from e
                made.append(d)
            job.apply(limits)
        except BaseException:
            for d in reversed(made):  # only what this call made: an existing cgroup is not ours
                try:
                    _rmdir(d)
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
                _rmdir(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise CgroupError(f"cannot remove {p}: {e.strerror}") from e

    @abstractmethod
    def _prepare_parent(self) -> None:
        """Make the parent (idempotent) so that job cgroups under it get every controller."""


class CgroupV1(CgroupDriver):
    version = "v1"
    needed = ("cpu", "cpuacct", "memory", "pids", "blkio", "freezer")
    _job_class = _V1Job

    def missing(self) -> list[str]:
        return [c for c in self.needed if c not in self._roots]

    def _prepare_parent(self) -> None:
        for c, p in self._parents().items():
            self._ensure_dir(p)
            if c == "memory":  # without it (old kernels) a child's usage is not charged to us
                flag = os.path.join(p, "memory.use_hierarchy")
                if os.path.exists(flag) and _read(flag).strip() == "0":
                    _write(flag, "1")


class CgroupV2(CgroupDriver):
    version = "v2"
    needed = ("cpu", "memory", "pids", "io")
    _job_class = _V2Job

    def __init__(self, parent: str, mount_root: str):
        super().__init__(parent, {c: mount_root for c in self.needed})
        self.mount_root = mount_root

    def missing(self) -> list[str]:
        try:
            have = _read(os.path.join(self.mount_root, "cgroup.controllers")).split()
        except CgroupError:
            have = []
        return [c for c in self.needed if c not in have]

    def _enable(self, directory: str) -> None:
        """Delegate the controllers to the children of directory (only the ones not yet on)."""
        path = os.path.join(directory, "cgroup.subtree_control")
        on = {c.lstrip("+") for c in _read(path).split()}
        todo = [c for c in self.needed if c not in on]
        if todo:
            _write(path, " ".join(f"+{c}" for c in todo))

    def _prepare_parent(self) -> None:
        parent = os.path.join(self.mount_root, self.parent)
        self._enable(self.mount_root)
        self._ensure_dir(parent)
        self._enable(parent)


# --- detection ---


def _v1_mounts(mounts_file: str) -> dict[str, str]:
    """controller -> mount point of each cgroup v1 hierarchy, found by its mount options."""
    out: dict[str, str] = {}
    try:
        with open(mounts_file) as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[2] != "cgroup":
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        for opt in fields[3].split(","):
            if opt in CgroupV1.needed:
                out.setdefault(opt, point)
    return out


def detect(
    parent: str, mount_root: str = "/sys/fs/cgroup", mounts_file: str = "/proc/self/mounts"
) -> CgroupDriver:
    """Pick the backend that actually holds the controllers: v2 if complete, else v1 if mounted.

    When neither is complete the closer one is returned so that missing() can explain the refusal.
    """
    v2 = None
    if os.path.exists(os.path.join(mount_root, "cgroup.controllers")):
        v2 = CgroupV2(parent, mount_root)
    if v2 is not None and not v2.missing():
        return v2
    mounts = _v1_mounts(mounts_file)
    if mounts:
        v1 = CgroupV1(parent, mounts)
        if v2 is None or not v1.missing():
            return v1
    if v2 is not None:
        return v2
    raise CgroupError(
        f"no cgroup filesystem: no {mount_root}/cgroup.controllers, "
        f"and no cgroup v1 mounts in {mounts_file}"
    )


def whole_disk_of(path: str, sysfs: str = "/sys") -> tuple[int, int] | None:
    """(major, minor) of the whole disk behind path's filesystem; None if no block device.

    I/O throttling is set per whole disk (v1 refuses partitions), and tmpfs, overlay or btrfs
    subvolumes have anonymous device numbers with no block device to throttle.
    """
    dev = os.stat(path).st_dev
    node = os.path.join(sysfs, "dev", "block", f"{os.major(dev)}:{os.minor(dev)}")
    if not os.path.exists(node):
        return None
    real = os.path.realpath(node)
    if os.path.exists(os.path.join(real, "partition")):
        real = os.path.dirname(real)  # a partition's sysfs directory sits inside its disk's
    major, minor = _read(os.path.join(real, "dev")).strip().split(":")
    return int(major), int(minor)

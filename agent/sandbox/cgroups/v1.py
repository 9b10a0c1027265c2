"""cgroup v1: one hierarchy per controller (or co-mounted groups), as older hosts have them."""

from __future__ import annotations

import os

from . import files
from ...poll import wait_for
from .base import CPU_PERIOD_US, CgroupDriver, CgroupLimits, CgroupUsage, JobCgroup


class V1Job(JobCgroup):
    def apply(self, limits: CgroupLimits) -> None:
        """Each file whose value differs from what this object wrote before (all the first time):
        a stage's cgroup, made with the standard device allowlist while it waits, gets its job's
        CPU, memory and pids limits only, a handful of writes fewer on the job's way (each takes
        cgroup and controller locks that other jobs' cgroups contend for)."""
        limits.check()
        was = self.applied
        if was is None:
            files.write(self._path("cpu", "cpu.cfs_period_us"), str(CPU_PERIOD_US))
        if was is None or was.cpu_percent != limits.cpu_percent:
            files.write(self._path("cpu", "cpu.cfs_quota_us"), str(limits.cpu_quota_us or -1))
        if was is None or was.memory_mb != limits.memory_mb:
            self._limit_memory(limits.memory_bytes, opened=was is not None and was.memory_mb is None)
        if was is None or was.pids != limits.pids:
            files.write(self._path("pids", "pids.max"), str(limits.pids or "max"))
        if limits.io_device is not None:
            dev = f"{limits.io_device[0]}:{limits.io_device[1]}"
            for f in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
                line = f"{dev} {limits.io_bps or 0}"
                self._write_io(self._path("blkio", f), line, limits.io_device)
        if limits.devices is not None and "devices" in self._ctl and (was is None or was.devices != limits.devices):
            self._allow_only(limits.devices)
        self.applied = limits

    def _limit_memory(self, limit: int | None, opened: bool) -> None:
        """memsw must stay >= the limit: open it first (not needed where both are unlimited, as
        this object left them: `opened`), then pin it to the limit."""
        mem = str(limit or -1)
        memsw = self._path("memory", "memory.memsw.limit_in_bytes")
        has_memsw = os.path.exists(memsw)
        if has_memsw and not opened:
            files.write(memsw, "-1")
        files.write(self._path("memory", "memory.limit_in_bytes"), mem)
        if has_memsw:
            files.write(memsw, mem)

    def _allow_only(self, devices: tuple[tuple[str, int, int], ...]) -> None:
        """Deny every device, then allow each listed one (read, write, no mknod)."""
        files.write(self._path("devices", "devices.deny"), "a")
        for kind, major, minor in devices:
            files.write(self._path("devices", "devices.allow"),
                        f"{kind} {major}:{'*' if minor < 0 else minor} rw")

    def usage(self) -> CgroupUsage:
        ns = int(files.read(self._path("cpuacct", "cpuacct.usage")))
        peak = int(files.read(self._path("memory", "memory.max_usage_in_bytes")))
        return CgroupUsage(cpu_s=ns / 1e9, memory_peak_bytes=peak)

    def oom_killed(self) -> bool:
        stats = files.keyvals(files.read(self._path("memory", "memory.oom_control")))
        if "oom_kill" in stats:
            return stats["oom_kill"] > 0
        # Kernels before 4.13 lack the counter: a failed charge at the limit is the best evidence.
        failcnt = int(files.read(self._path("memory", "memory.failcnt")))
        limit = int(files.read(self._path("memory", "memory.limit_in_bytes")))
        peak = int(files.read(self._path("memory", "memory.max_usage_in_bytes")))
        return failcnt > 0 and peak >= limit

    def usage_files(self) -> dict[str, str]:
        return {"cpu_ns": self._path("cpuacct", "cpuacct.usage"),
                "peak": self._path("memory", "memory.max_usage_in_bytes"),
                "events": self._path("memory", "memory.oom_control"),
                "failcnt": self._path("memory", "memory.failcnt"),
                "limit": self._path("memory", "memory.limit_in_bytes")}

    def _freeze(self, frozen: bool) -> bool:
        state = self._path("freezer", "freezer.state")
        if not os.path.exists(state):
            return False
        want = "FROZEN" if frozen else "THAWED"
        files.write(state, want)
        if frozen:  # FREEZING until every task has stopped; thawing needs no wait
            wait_for(lambda: files.read(state).strip() == want)
        return True


class CgroupV1(CgroupDriver):
    version = "v1"
    needed = ("cpu", "cpuacct", "memory", "pids", "blkio", "freezer")
    optional = ("devices",)
    _job_class = V1Job

    def missing(self) -> list[str]:
        return [c for c in self.needed if c not in self._roots]

    def _prepare_parent(self) -> None:
        for c, p in self._parents().items():
            self._ensure_dir(p)
            if c == "memory":  # without it (old kernels) a child's usage is not charged to us
                flag = os.path.join(p, "memory.use_hierarchy")
                if os.path.exists(flag) and files.read(flag).strip() == "0":
                    files.write(flag, "1")

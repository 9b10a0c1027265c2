"""cgroup v2: one unified hierarchy whose controllers each parent delegates to its children."""

from __future__ import annotations

import os

from . import files
from ...poll import wait_for
from .base import CPU_PERIOD_US, CgroupDriver, CgroupLimits, CgroupUsage, JobCgroup
from .files import CgroupError


class V2Job(JobCgroup):
    def apply(self, limits: CgroupLimits) -> None:
        limits.check()
        files.write(self._path("cpu", "cpu.max"), f"{limits.cpu_quota_us or 'max'} {CPU_PERIOD_US}")
        files.write(self._path("memory", "memory.max"), str(limits.memory_bytes or "max"))
        swap = self._path("memory", "memory.swap.max")
        if os.path.exists(swap):  # absent when the kernel has no swap accounting
            files.write(swap, "0" if limits.memory_bytes else "max")
        files.write(self._path("pids", "pids.max"), str(limits.pids or "max"))
        if limits.io_device is not None:
            bps = limits.io_bps or "max"
            line = f"{limits.io_device[0]}:{limits.io_device[1]} rbps={bps} wbps={bps}"
            self._write_io(self._path("io", "io.max"), line, limits.io_device)

    def usage(self) -> CgroupUsage:
        usec = files.keyvals(files.read(self._path("cpu", "cpu.stat"))).get("usage_usec", 0)
        peak = self._path("memory", "memory.peak")  # since 5.19; before, the current value is all
        mem = peak if os.path.exists(peak) else self._path("memory", "memory.current")
        return CgroupUsage(cpu_s=usec / 1e6, memory_peak_bytes=int(files.read(mem)))

    def oom_killed(self) -> bool:
        return files.keyvals(files.read(self._path("memory", "memory.events"))).get("oom_kill", 0) > 0

    def usage_files(self) -> dict[str, str]:
        peak = self._path("memory", "memory.peak")
        return {"cpu_stat": self._path("cpu", "cpu.stat"),
                "peak": peak if os.path.exists(peak) else self._path("memory", "memory.current"),
                "events": self._path("memory", "memory.events")}

    def _kill_native(self) -> bool:
        path = os.path.join(self.dirs[0], "cgroup.kill")  # since 5.14
        if not os.path.exists(path):
            return False
        files.write(path, "1")
        return True

    def _freeze(self, frozen: bool) -> bool:
        path = os.path.join(self.dirs[0], "cgroup.freeze")  # since 5.2
        if not os.path.exists(path):
            return False
        files.write(path, "1" if frozen else "0")
        events = os.path.join(self.dirs[0], "cgroup.events")
        if frozen:
            wait_for(lambda: files.keyvals(files.read(events)).get("frozen") == 1)
        return True


class CgroupV2(CgroupDriver):
    version = "v2"
    needed = ("cpu", "memory", "pids", "io")
    _job_class = V2Job

    def __init__(self, parent: str, mount_root: str):
        super().__init__(parent, {c: mount_root for c in self.needed})
        self.mount_root = mount_root

    def missing(self) -> list[str]:
        try:
            have = files.read(os.path.join(self.mount_root, "cgroup.controllers")).split()
        except CgroupError:
            have = []
        return [c for c in self.needed if c not in have]

    def _enable(self, directory: str) -> None:
        """Delegate the controllers to the children of directory (only the ones not yet on)."""
        path = os.path.join(directory, "cgroup.subtree_control")
        on = {c.lstrip("+") for c in files.read(path).split()}
        todo = [c for c in self.needed if c not in on]
        if todo:
            files.write(path, " ".join(f"+{c}" for c in todo))

    def _prepare_parent(self) -> None:
        parent = os.path.join(self.mount_root, self.parent)
        self._enable(self.mount_root)
        self._ensure_dir(parent)
        self._enable(parent)

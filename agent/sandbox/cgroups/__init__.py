"""Job cgroups: CPU, memory, pids and I/O limits, usage, OOM report and kill, on cgroup v1 or v2.

Hosts differ: older ones give the controllers to cgroup v1 hierarchies (one mount per controller or
co-mounted groups), current ones run pure cgroup v2. `detect` finds which from what is mounted, and
both backends implement one small interface (`base.py`), so the agent codes against neither.
"""

from .base import CgroupDriver, CgroupLimits, CgroupUsage, JobCgroup
from .detect import detect, whole_disk_of
from .files import CgroupError
from .v1 import CgroupV1
from .v2 import CgroupV2

__all__ = ["CgroupDriver", "CgroupError", "CgroupLimits", "CgroupUsage", "CgroupV1", "CgroupV2", "JobCgroup",
           "detect", "whole_disk_of"]

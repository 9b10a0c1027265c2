"""The sandbox spec: the data the agent hands to the launcher on a trusted channel.

It is plain data (nsjail's lesson: configuration is a declarative message, separate from the code
that applies it). The launcher receives it as JSON over a unix socket from the agent; nothing in it
comes from the user's environment, and the job type is a typed field set by the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..contract import JobType
from .cgroups import CgroupLimits

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
"""The base system's command path: where a job's and a build's PATH start, and where the agent
looks for the python3 script jobs need."""


@dataclass
class Mount:
    """A bind mount of a host path into the sandbox root. With `beneath`, `source` is relative to
    that folder and is resolved beneath it with no symlink on the way (a runtime's `isolated/`
    tree, which a setup script shaped); otherwise it is a host path the agent chose."""

    source: str
    target: str
    readonly: bool = True
    beneath: str | None = None


@dataclass
class WorkFile:
    """A file written into /work before the user's code runs (an upload, a cell, its runner)."""

    path: str
    content: bytes
    mode: int = 0o644


@dataclass
class SandboxSpec:
    """Everything the in-sandbox init needs, and nothing the user chose that it must not trust."""

    job_id: str
    job_type: JobType
    root_dir: str                      # the mount point of the job's tmpfs root (in the stage's own mount namespace)
    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    hostname: str = "joblet"
    disk_mb: int = 256                 # size of the job's tmpfs (root skeleton, /work, /tmp)
    shm_mb: int = 64
    system: Mount | None = None        # the job's /usr: a built base image (its usr/ tree); None: the host's
    mounts: list[Mount] = field(default_factory=list)      # extra binds (runtime, builder paths)
    masks: list[str] = field(default_factory=list)         # paths hidden under an empty tmpfs/devnull
    etc_files: dict[str, str] = field(default_factory=dict)  # name -> content, written into /etc
    uploads: list[WorkFile] = field(default_factory=list)
    cgroup_limits: CgroupLimits = field(default_factory=CgroupLimits)  # the stage applies them
    network: str = "none"
    refuse_tcp: bool = False           # Landlock refuses every TCP bind and connect (network.none_tcp: refuse)
    wait_for_go: bool = False          # init waits for the agent (e.g. network set-up) before exec
    stdin_pipe: bool = False           # fd 0 is a pipe from the agent (a session's runner), not /dev/null
    artifacts_dir: str | None = None   # host dir where /work is copied when the job ends
    work_bytes: int | None = None      # at most this many bytes of /work are kept (None: disk_mb)
    work_files: int | None = None      # and at most this many files and folders
    devices: list[str] = field(default_factory=list)  # host device nodes bound into /dev (GPUs Slurm gave)
    state_dir: str = ""                # a held job's: host dir of its log, outcome and control socket (root's)
    holder_token: str = ""             # the holder proves it read this spec by repeating it (hello)
    timeout_s: float | None = None     # the holder stops the job after this long (reason timeout)
    stop_grace_s: float = 5.0          # SIGTERM to SIGKILL, for a stop the holder decides itself
    max_output_bytes: int = 0          # stdout+stderr the holder keeps in the log (0: all)
    output: str = "text"               # output.TRANSLATORS: what the holder makes of stdout/stderr
    output_options: dict[str, Any] = field(default_factory=dict)  # for that translator

    def to_json_dict(self) -> dict[str, Any]:
        """Built field by field: `asdict` deep-copies every upload and /etc file first, which cost
        more than the rest of handing a job over; its recursion over each mount (a job has about
        seven) still cost more than the JSON encoding (a third of the spec's hand-over)."""
        data = _plain(self)
        data["job_type"] = self.job_type.value
        data["mounts"] = [_plain(m) for m in self.mounts]
        data["system"] = _plain(self.system) if self.system else None
        data["cgroup_limits"] = _plain(self.cgroup_limits)
        data["uploads"] = [{"path": u.path, "content": u.content.hex(), "mode": u.mode} for u in self.uploads]
        return data

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> "SandboxSpec":
        data = dict(data)
        data["job_type"] = JobType.parse(data.get("job_type"))
        data["mounts"] = [Mount(**m) for m in data.get("mounts", [])]
        data["system"] = Mount(**data["system"]) if data.get("system") else None
        data["cgroup_limits"] = CgroupLimits.from_json_dict(data.get("cgroup_limits") or {})
        data["uploads"] = [
            WorkFile(path=u["path"], content=bytes.fromhex(u["content"]), mode=u.get("mode", 0o644))
            for u in data.get("uploads", [])
        ]
        return cls(**data)


_NAMES: dict[type, tuple[str, ...]] = {}


def _plain(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, one level (its values are already what JSON takes)."""
    names = _NAMES.get(type(obj))
    if names is None:
        names = _NAMES[type(obj)] = tuple(f.name for f in fields(obj))
    return {name: getattr(obj, name) for name in names}

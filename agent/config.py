"""The agent's configuration file (YAML), validated; every field has a safe default."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import CannotIsolate
from .hubconfig import LIMIT_NAMES, HubConfig
from .quotas import ApiLimits, Quotas


class DefaultLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu_percent: int | None = None
    memory_mb: int = 1024
    pids: int = 512
    io_bps: int = 0
    timeout_s: float | None = None
    disk_mb: int = 256
    gpus: int = 0


def _memory_mb() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    except (ValueError, OSError):
        return 4096


class MaxLimits(BaseModel):
    """The most a single job may ask for; larger asks are refused with a 400 that says so. The
    defaults keep one job from taking the host: 3/4 of its memory, 4096 processes."""

    model_config = ConfigDict(extra="forbid")
    cpu_percent: int = Field(default_factory=lambda: 100 * (os.cpu_count() or 1))
    memory_mb: int = Field(default_factory=lambda: max(64, _memory_mb() * 3 // 4))
    pids: int = 4096
    io_bps: int = 1 << 40
    timeout_s: float = 7 * 86400
    disk_mb: int = 16384
    gpus: int = 64


class AgentLimits(BaseModel):
    """What all of an agent's jobs together may use (limits on its parent cgroup). The defaults
    leave the host a tenth of its memory, and bound the process count."""

    model_config = ConfigDict(extra="forbid")
    cpu_percent: int | None = None
    memory_mb: int = Field(default_factory=lambda: max(128, _memory_mb() * 9 // 10))
    pids: int = 32768


class NetworkConfig(BaseModel):
    """Bridge mode (`network: bridge` jobs). README "Networking" explains each rule."""

    model_config = ConfigDict(extra="forbid")
    bridge: str | None = Field(None, pattern=r"^jnb-[A-Za-z0-9_.-]{1,11}$",
                               description="bridge device, named jnb-*: the agent owns it and removes it, "
                                           "ports included, at start-up and shutdown; default "
                                           "jnb-br-<hash of the agent root>")
    subnet: str | None = Field(None, description="IPv4 subnet of bridge jobs (prefix /16 to /29); default "
                                                 "10.89.<N>.0/24, N derived from the agent root")
    allow: list[str] = Field(default_factory=list, description="if set, the only networks (CIDR) bridge "
                                                               "jobs may reach; empty: every routed one")
    deny: list[str] = Field(default_factory=list, description="more networks (CIDR) bridge jobs never reach, "
                                                              "e.g. your LAN")
    dns: list[str] = Field(default_factory=list, description="nameservers for bridge jobs' resolv.conf; empty: "
                                                             "the host's, loopback ones dropped")
    none_tcp: Literal["loopback", "refuse"] = Field(
        "loopback", description="TCP in jobs and sessions with network none: 'loopback' leaves it to their "
                                "own namespace (only lo: their own servers work, nothing else is reachable); "
                                "'refuse' adds Landlock's no TCP at all (ABI 4), a second lock that also "
                                "stops TCP between the job's own processes")

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str | None) -> str | None:
        if value is None:
            return None
        net = ipaddress.IPv4Network(value)
        if not 16 <= net.prefixlen <= 29:
            raise ValueError(f"subnet {value}: use a prefix between /16 and /29")
        return str(net)

    @field_validator("allow", "deny")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return [str(ipaddress.IPv4Network(v, strict=False)) for v in values]

    @field_validator("dns")
    @classmethod
    def _nameservers(cls, values: list[str]) -> list[str]:
        return [str(ipaddress.IPv4Address(v)) for v in values]


class SessionConfig(BaseModel):
    """Sessions (POST /v1/sessions): how long an unused one lives, and how many a user may hold."""

    model_config = ConfigDict(extra="forbid")
    idle_timeout_s: float = Field(1800, gt=0, description="a session without a cell this long ends (reason idle)")
    max_idle_timeout_s: float = Field(86400, gt=0, description="the most a request's idle_timeout_s may ask")
    max_per_user: int = Field(128, ge=1, description="live sessions of one user at once")
    max_queued_cells: int = Field(1000, ge=1, description="cells waiting in one session")
    keep_ended_s: float = Field(7 * 86400, ge=0, description="an ended session's record and event log are "
                                                          "kept this long (DELETE forgets one at once)")


SLURM_RESERVED_ARGS = ("--job-name", "--input", "--output", "--error", "--uid", "--gid", "--jobid", "--gres",
                       "--gpus", "--mem", "--cpus-per-task", "--time", "--partition", "--account", "--export",
                       "--chdir", "--nodes", "--ntasks", "--pty", "--unbuffered", "--quiet")


class SlurmConfig(BaseModel):
    """`executor: slurm`: where and how the agent places jobs (README "Clusters")."""

    model_config = ConfigDict(extra="forbid")
    partition: str | None = Field(None, pattern=r"^[A-Za-z0-9_.,-]{1,128}$")
    account: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    extra_args: list[str] = Field(default_factory=list, description="more srun options, e.g. --qos=notebook; "
                                                                     "the ones the agent sets itself are refused")
    node_root: str = Field("/var/lib/joblet-node", description="on every node: the node side's job folders, "
                                                               "state and cgroup parent")
    runtimes: str | None = Field(None, description="where every node finds the published runtimes (a shared "
                                                   "folder); default: the agent's own runtimes folder, which "
                                                   "must then be mounted at the same path on every node")
    key_file: str | None = Field(None, description="the key that signs job specs for the nodes (root-only, "
                                                   "the same file on every node); default ROOT/config/cluster.key")
    python: str | None = Field(None, description="the interpreter with joblet-nb on the nodes; default the "
                                                 "agent's own")

    @field_validator("extra_args")
    @classmethod
    def _extra_args(cls, values: list[str]) -> list[str]:
        for arg in values:
            name = arg.split("=", 1)[0]
            if not name.startswith("--") or "\x00" in arg:
                raise ValueError(f"slurm.extra_args: {arg!r} must be a long option (--name=value)")
            if name in SLURM_RESERVED_ARGS:
                raise ValueError(f"slurm.extra_args: {name} is set by the agent from each job's request")
        return values

    @field_validator("node_root", "runtimes", "key_file", "python")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} must be an absolute path")
        return value


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    listen: str = Field("127.0.0.1:7755", description="HOST:PORT; 0.0.0.0 only when set here")
    base: Literal["minimal", "host"] = Field("minimal", description="what production jobs and sessions "
                                             "see as /usr: the minimal base image the agent builds "
                                             "(runtimes/base), or the host's")
    tls: bool = Field(False, description="serve HTTPS with the agent's own certificate; always on "
                                         "when listening beyond loopback")
    stop_grace_s: float = Field(5.0, ge=0, le=300, description="SIGTERM to SIGKILL, on stop")
    uid_base: int = Field(1_000_000, ge=10_000, description="jobs run as uid_base + slot")
    uid_slots: int = Field(60_000, ge=16)
    defaults: DefaultLimits = Field(default_factory=DefaultLimits)
    max_limits: MaxLimits = Field(default_factory=MaxLimits)
    agent_limits: AgentLimits = Field(default_factory=AgentLimits)
    max_outputs_bytes: int = Field(16 << 20, ge=1024, description="JSON `--out` values of one job")
    max_output_mb: int = Field(64, ge=1, description="stdout+stderr kept per job; the rest is drained")
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    sessions: SessionConfig = Field(default_factory=SessionConfig)
    jupyterhub: HubConfig | None = Field(None, description="accept JupyterHub tokens (README: Running "
                                                           "behind JupyterHub)")
    executor: Literal["local", "slurm"] = Field("local", description="local: jobs run on this host; slurm: "
                                                                     "every job and session goes through Slurm")
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    api: ApiLimits = Field(default_factory=ApiLimits)
    quotas: Quotas = Field(default_factory=Quotas)

    @model_validator(mode="after")
    def _hub_caps_within_max(self) -> "AgentConfig":
        """A group's or user's maximum above the agent's own would be a promise the agent breaks."""
        hub = self.jupyterhub
        if hub is None:
            return self
        for kind, entries in (("groups", hub.groups), ("users", hub.users)):
            for who, rules in entries.items():
                for name in LIMIT_NAMES:
                    cap, top = getattr(rules.max_limits, name), getattr(self.max_limits, name)
                    if cap is not None and cap > top:
                        raise ValueError(f"jupyterhub.{kind}.{who}.max_limits.{name} ({cap:g}) is above "
                                         f"max_limits.{name} ({top:g})")
        return self


def load_config(path: Path | None) -> AgentConfig:
    try:
        if path is None or not path.exists():
            return AgentConfig()
        data = yaml.safe_load(path.read_text()) or {}
        return AgentConfig.model_validate(data)
    except OSError as exc:
        raise CannotIsolate(f"cannot read config file {path}: {exc.strerror}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise CannotIsolate(f"config file {path} is not valid: {exc}") from None

"""Turning what a run asks for into the body of `POST /v1/jobs` (API.md): option strings are
parsed here, `RunOptions` holds one run's choices and `build_request` makes its `JobRequest`.

Sizes take units (`K`, `M`, `G`; a bare number means megabytes), times take seconds (or
`s`/`m`/`h`). Values sent with `--in` must be JSON: nothing is pickled either way.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Iterable

from joblet_agent.contract import IDENTIFIER

from .records import JobLimits, to_json

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$")
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhSMH]?)\s*$")
_MB_PER_UNIT = {"": 1.0, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0 * 1024}
_BYTES_PER_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}
BASE_NAMES = ("base", "none", "")  # runtime names that mean the base system's python3


class OptionError(ValueError):
    """An option that cannot be turned into a request; the message says the right form."""


def parse_size_mb(text: str, option: str = "size") -> int:
    """`512M` -> 512, `1G` -> 1024, `256` -> 256 (megabytes), `100K` -> 1 (rounded up)."""
    m = _SIZE.match(str(text))
    if not m:
        raise OptionError(f"{option}: {text!r} is not a size; write e.g. 512M, 1G or 256 (MB)")
    return max(1, math.ceil(float(m.group(1)) * _MB_PER_UNIT[m.group(2).lower()]))


def parse_rate_bps(text: str, option: str = "rate") -> int:
    """An I/O rate in bytes per second: `10M` -> 10485760; a bare number means megabytes."""
    m = _SIZE.match(str(text))
    if not m:
        raise OptionError(f"{option}: {text!r} is not a rate; write e.g. 10M (per second)")
    unit = m.group(2).lower()
    factor = _BYTES_PER_UNIT[unit] if unit else _BYTES_PER_UNIT["m"]
    return int(float(m.group(1)) * factor)


def parse_seconds(text: str, option: str = "time") -> int:
    """`30` -> 30, `5m` -> 300, `1h` -> 3600."""
    m = _TIME.match(str(text))
    if not m:
        raise OptionError(f"{option}: {text!r} is not a time; write seconds, e.g. 30, or 5m, 1h")
    return max(1, math.ceil(float(m.group(1)) * _SECONDS_PER_UNIT[m.group(2).lower()]))


def parse_cpu_percent(text: str) -> int:
    """`50` or `50%` -> 50 (percent of one CPU; 200 means two CPUs)."""
    value = str(text).strip().rstrip("%")
    try:
        pct = float(value)
    except ValueError:
        raise OptionError(f"--max-cpu: {text!r} is not a percentage; write e.g. 50 or 200") from None
    if pct <= 0:
        raise OptionError("--max-cpu must be more than 0 (percent of one CPU)")
    return math.ceil(pct)


def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    """`K=V` pairs; the agent itself refuses reserved names (JOB_ID, JOBLET_*)."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not IDENTIFIER.match(name):
            raise OptionError(f"--env: {pair!r} is not NAME=value")
        env[name] = value
    return env


@dataclass(frozen=True)
class Upload:
    """A file sent into the job's /work before it starts."""

    path: str  # relative to /work
    content: bytes
    mode: int = 0o644

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "content_b64": base64.b64encode(self.content).decode("ascii"),
                "mode": self.mode}


def read_upload(spec: str) -> Upload:
    """`PATH` or `PATH:DEST`: a local file sent into the job's /work (DEST relative)."""
    local, sep, dest = spec.partition(":")
    if not sep:
        dest = os.path.basename(local.rstrip("/"))
    if dest.startswith("/") or ".." in dest.split("/") or not dest:
        raise OptionError(f"--upload: destination {dest!r} must be a relative path inside /work")
    path = os.path.expanduser(local)
    if not os.path.isfile(path):
        raise OptionError(f"--upload: no file {local!r} (relative paths start at {os.getcwd()})")
    with open(path, "rb") as f:
        content = f.read()
    return Upload(dest, content, stat.S_IMODE(os.stat(path).st_mode) & 0o755)


def collect_inputs(names: Iterable[str], namespace: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """JSON values of the named variables, and a line per value stating its size."""
    inputs: dict[str, Any] = {}
    sizes: list[str] = []
    for name in names:
        if not name.isidentifier():
            raise OptionError(f"--in: {name!r} is not a variable name")
        if name not in namespace:
            raise OptionError(f"--in: there is no variable {name!r} in this notebook")
        value = namespace[name]
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise OptionError(
                f"--in {name}: a {type(value).__name__} is not JSON ({exc}); "
                "send lists, dicts, numbers, strings, booleans or None"
            ) from None
        inputs[name] = json.loads(text)
        sizes.append(f"{name} ({type(value).__name__}, {len(text.encode())} B JSON)")
    return inputs, sizes


def limits_from(
    max_memory: str | None = None,
    max_cpu: str | None = None,
    pids: int | None = None,
    timeout: str | None = None,
    disk: str | None = None,
    max_io: str | None = None,
    gpus: int | None = None,
) -> JobLimits:
    """The limits of option strings; options not given stay None (the agent's default)."""
    if pids is not None and pids < 1:
        raise OptionError("--pids must be at least 1")
    if gpus is not None and gpus < 0:
        raise OptionError("--gpus must be 0 or more")
    return JobLimits(
        memory_mb=None if max_memory is None else parse_size_mb(max_memory, "--max-memory"),
        cpu_percent=None if max_cpu is None else parse_cpu_percent(max_cpu),
        pids=pids,
        timeout_s=None if timeout is None else parse_seconds(timeout, "--timeout"),
        disk_mb=None if disk is None else parse_size_mb(disk, "--disk"),
        io_bps=None if max_io is None else parse_rate_bps(max_io, "--max-io"),
        gpus=gpus,
    )


def names(values: Iterable[str]) -> list[str]:
    """`--out a --out b` and `--out a,b` both name two variables."""
    found: list[str] = []
    for value in values:
        found += [n.strip() for n in value.split(",") if n.strip()]
    return found


def effective_runtime(option: str | None, default: str = "") -> str | None:
    """The runtime a cell runs in: its option, else the default; None for the base system."""
    name = option if option is not None else default
    return None if (name or "").lower() in BASE_NAMES else name


# ---- the request ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRequest:
    """The body of `POST /v1/jobs`: exactly one of `command` or `script`."""

    command: list[str] | None = None
    script: str | None = None
    runtime: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    limits: JobLimits = field(default_factory=JobLimits)
    network: str | None = None  # None: the agent's default ("none")
    uploads: list[Upload] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON body; what is not set is left out, so the agent's defaults apply."""
        body: dict[str, Any] = {"command": self.command, "script": self.script,
                                "runtime": self.runtime, "network": self.network,
                                "env": self.env, "limits": to_json(self.limits),
                                "uploads": [u.to_json() for u in self.uploads],
                                "inputs": self.inputs, "outputs": self.outputs}
        return {k: v for k, v in body.items() if v is not None and v != {} and v != []}


@dataclass(frozen=True)
class Defaults:
    """What runs that do not say otherwise get (a notebook's own defaults)."""

    runtime: str = ""
    limits: JobLimits = field(default_factory=JobLimits)
    network: str = ""


@dataclass
class RunOptions:
    """One run, parsed: what goes into its request, and what to do with its result."""

    runtime: str | None = None  # None: the default runtime; "base": the system python3
    limits: JobLimits = field(default_factory=JobLimits)
    network: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    uploads: list[str] = field(default_factory=list)  # PATH[:DEST]
    inputs: list[str] = field(default_factory=list)   # variable names
    outputs: list[str] = field(default_factory=list)
    show: list[str] = field(default_factory=list)     # paths or globs in /work
    fetch: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    background: bool = False
    allow_error: bool = False
    node: str | None = None
    status_line: bool = True


def build_request(options: RunOptions, script: str | None, defaults: Defaults,
                  inputs: dict[str, Any] | None = None) -> JobRequest:
    """The request of a run: a script (a cell) or a command, over the notebook's defaults.

    `inputs` are the JSON values of `options.inputs` (see `collect_inputs`).
    """
    command = options.command[1:] if options.command[:1] == ["--"] else list(options.command)
    if script is not None and command:
        raise OptionError("give a script or a command, not both")
    if script is None and not command:
        raise OptionError("nothing to run: give a script or a command")
    return JobRequest(
        command=command or None, script=script,
        runtime=effective_runtime(options.runtime, defaults.runtime),
        env=dict(options.env), limits=options.limits.over(defaults.limits),
        network=options.network or defaults.network or None,
        uploads=[read_upload(u) for u in options.uploads],
        inputs=dict(inputs or {}), outputs=list(options.outputs),
    )

"""Turning magic options into the body of `POST /v1/jobs` (API.md).

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
from typing import Any, Iterable

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$")
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhSMH]?)\s*$")
_MB_PER_UNIT = {"": 1.0, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0 * 1024}
_BYTES_PER_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OptionError(ValueError):
    """A magic option that cannot be turned into a request; the message says the right form."""


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
        if not sep or not _ENV_NAME.match(name):
            raise OptionError(f"--env: {pair!r} is not NAME=value")
        env[name] = value
    return env


def read_upload(spec: str) -> dict[str, Any]:
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
    mode = stat.S_IMODE(os.stat(path).st_mode) & 0o755
    return {"path": dest, "content_b64": base64.b64encode(content).decode("ascii"), "mode": mode}


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
) -> dict[str, int]:
    """The `limits` object from option strings; options not given are left out."""
    limits: dict[str, int] = {}
    if max_memory is not None:
        limits["memory_mb"] = parse_size_mb(max_memory, "--max-memory")
    if max_cpu is not None:
        limits["cpu_percent"] = parse_cpu_percent(max_cpu)
    if pids is not None:
        if pids < 1:
            raise OptionError("--pids must be at least 1")
        limits["pids"] = pids
    if timeout is not None:
        limits["timeout_s"] = parse_seconds(timeout, "--timeout")
    if disk is not None:
        limits["disk_mb"] = parse_size_mb(disk, "--disk")
    if max_io is not None:
        limits["io_bps"] = parse_rate_bps(max_io, "--max-io")
    return limits

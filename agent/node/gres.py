"""The GPUs Slurm gave a step, as device files on this node.

Slurm says which GPUs a step got as indices (`SLURM_STEP_GPUS`, or `SLURM_JOB_GPUS`), and sets
`CUDA_VISIBLE_DEVICES` for them. Which device file an index means is in the node's GRES
configuration; `slurmd -G` prints it as slurmd itself reads it (slurm.conf merged with gres.conf
for this node), so the node side never parses gres.conf on its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from .shared import NodeSetupError

# the devices every CUDA process opens besides its GPUs; bound only when they exist on the node
CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"  # a step may have no PATH
_LINE = re.compile(r"Name=gpu\b.*?\bIndex=(\d+)\b.*?\bFile=(\S+)")
_RANGE = re.compile(r"^(.*)\[([0-9,\-]+)\](.*)$")


class GresError(NodeSetupError):
    """The GPUs Slurm allocated cannot be matched to device files on this node."""


@dataclass
class Allocation:
    indices: list[int] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)   # host paths of the GPUs, then control devices
    visible: str | None = None                         # CUDA_VISIBLE_DEVICES as Slurm set it


def expand(expression: str) -> list[str]:
    """`/dev/nvidia[0-1,3]` -> `/dev/nvidia0`, `/dev/nvidia1`, `/dev/nvidia3` (one bracket group,
    as gres.conf writes device ranges)."""
    match = _RANGE.match(expression)
    if not match:
        return [expression]
    head, ranges, tail = match.groups()
    out = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        width = len(low) if low.startswith("0") and len(low) > 1 else 0
        out += [f"{head}{n:0{width}d}{tail}" for n in range(int(low), int(high or low) + 1)]
    return out


def device_files(text: str) -> dict[int, str]:
    """{index: device file} from `slurmd -G` output."""
    files: dict[int, str] = {}
    for line in text.splitlines():
        match = _LINE.search(line)
        if match:
            first = int(match.group(1))
            for offset, path in enumerate(expand(match.group(2))):
                files[first + offset] = path
    return files


def allocated_indices(env: dict[str, str]) -> list[int]:
    text = env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS") or ""
    try:
        return [int(i) for i in text.split(",") if i.strip()]
    except ValueError:
        raise GresError(f"Slurm gave GPU indices {text!r}, which are not numbers") from None


def allocation(env: dict[str, str], asked: int) -> Allocation:
    """The device files of the GPUs this step got; GresError unless there are `asked` of them."""
    indices = allocated_indices(env)
    if len(indices) != asked:
        raise GresError(f"{asked} GPUs asked, Slurm gave this step {len(indices)} "
                        f"(SLURM_STEP_GPUS={env.get('SLURM_STEP_GPUS')!r})")
    slurmd = shutil.which("slurmd", path=SBIN_PATH)
    if slurmd is None:
        raise GresError(f"no slurmd on this node's {SBIN_PATH} to read its GRES configuration from")
    out = subprocess.run([slurmd, "-G"], capture_output=True, text=True, env=env, timeout=30)
    files = device_files(out.stdout + out.stderr)
    missing = [i for i in indices if i not in files]
    if missing:
        raise GresError(f"no device file for GPU index {missing} in this node's GRES configuration")
    devices = [files[i] for i in indices] + [d for d in CONTROL_DEVICES if os.path.exists(d)]
    return Allocation(indices, devices, env.get("CUDA_VISIBLE_DEVICES"))

"""Files a job left in /work: shown inline (images) or saved next to the notebook.

Sizes are always stated; nothing is cut and nothing is unpickled.
"""

from __future__ import annotations

import os
from typing import Any

from ..core.client import JobletClient
from ..core.errors import JobletError
from .display import fmt_bytes

IMAGE_TYPES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif", ".svg": "svg"}


def is_pattern(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def expand(client: JobletClient, job_id: str, patterns: list[str]) -> list[str]:
    """Paths named plainly are kept; a glob pattern cannot be expanded yet."""
    for pattern in patterns:
        if is_pattern(pattern):
            raise JobletError(f"{pattern!r} is a pattern, and a job's files cannot be listed yet; "
                              "name the file exactly, e.g. --show plot.png")
    return list(patterns)


def image_object(path: str, data: bytes) -> Any:
    """An IPython display object for an image file, or None for other files."""
    from IPython.display import SVG, Image

    kind = IMAGE_TYPES.get(os.path.splitext(path)[1].lower())
    if kind is None:
        return None
    if kind == "svg":
        return SVG(data=data.decode("utf-8", "replace"))
    return Image(data=data, format=kind)


def show(client: JobletClient, job_id: str, patterns: list[str]) -> list[str]:
    """Display the named images inline; returns one line per file saying what was shown."""
    from IPython.display import display

    lines = []
    for path in expand(client, job_id, patterns):
        data = client.download(job_id, path)
        obj = image_object(path, data)
        if obj is None:
            lines.append(f"{path}: {fmt_bytes(len(data))}, not an image (png, jpeg, gif, svg); "
                         f"use --fetch to save it")
            continue
        display(obj)
        lines.append(f"{path}: {fmt_bytes(len(data))} shown")
    return lines


def fetch(client: JobletClient, job_id: str, patterns: list[str], dest_dir: str = ".") -> list[str]:
    """Save files from the job's /work into `dest_dir` (the notebook's folder by default)."""
    lines = []
    for path in expand(client, job_id, patterns):
        data = client.download(job_id, path)
        target = os.path.join(dest_dir, os.path.basename(path))
        with open(target, "wb") as f:
            f.write(data)
        lines.append(f"{path} -> {target} ({fmt_bytes(len(data))})")
    return lines

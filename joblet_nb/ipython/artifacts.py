"""Files a job left in /work: shown inline (images) or saved next to the notebook.

Sizes are always stated; nothing is cut and nothing is unpickled.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Any

from ..core.client import JobletClient
from ..core.errors import NotFoundError
from ..core.records import FileListing
from .display import fmt_bytes

IMAGE_TYPES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif", ".svg": "svg"}


def is_pattern(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def expand(client: JobletClient, job_id: str, patterns: list[str]) -> list[str]:
    """Paths named plainly are kept; a glob pattern (`*.png`, `out/*.csv`; `*` also crosses `/`)
    gives every file of the job's /work listing it matches, or a NotFoundError if none does.
    As in a shell, a hidden name (`.joblet/...`) matches only a pattern that names the dot."""
    paths: list[str] = []
    listing: FileListing | None = None
    for pattern in patterns:
        if not is_pattern(pattern):
            paths.append(pattern)
            continue
        listing = listing or client.files(job_id)
        matched = [f.path for f in listing.files if _matches(f.path, pattern)]
        if not matched:
            cut = f" among the first {len(listing.files)} it listed" if listing.truncated else ""
            raise NotFoundError(f"no file in the /work of job {job_id} matches {pattern!r}{cut}")
        paths += matched
    return paths


def _matches(path: str, pattern: str) -> bool:
    hidden = any(part.startswith(".") for part in path.split("/"))
    return fnmatch.fnmatchcase(path, pattern) and (not hidden or "/." in "/" + pattern)


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

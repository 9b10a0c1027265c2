"""What a job left in /work, copied to the agent's files folder after its end, with its limits.

`copy_work` is `sequence.collect_work`'s copy, which the Python holder runs in its own process.
jnb-holder (holder_copy.c) does the same copy in C, with the same tree, counts and notes
(tests/test_holder_copy.py compares them); this module gives it the limits (`work_limit`).
"""

from __future__ import annotations

import os

from ..fs import copy_tree
from .spec import SandboxSpec


def copy_work(root_dir: str, artifacts_dir: str, limit_bytes: int, limit_entries: int | None) -> tuple[int, int, list[str]]:
    """Copy `root_dir`/work to `artifacts_dir` within the limits; the files and folders and the
    bytes kept, and notes on what was not."""
    try:
        report = copy_tree(os.path.join(root_dir, "work"), artifacts_dir, limit_bytes=limit_bytes,
                           limit_entries=limit_entries)
    except OSError as exc:
        return 0, 0, [f"copying /work out: {exc}"]
    notes = []
    if report.skipped:
        left_out = len(report.skipped) + report.skipped_more
        more = f" (and {left_out - 3} more)" if left_out > 3 else ""
        notes.append("not kept: " + "; ".join(report.skipped[:3]) + more)
    return report.files + report.dirs, report.copied, notes


def work_limit(spec: SandboxSpec) -> int:
    """/work's copy is bounded by the job's own disk size and its user's quota left."""
    return spec.disk_mb << 20 if spec.work_bytes is None else min(spec.disk_mb << 20, spec.work_bytes)


def note_event(note: str) -> dict[str, str]:
    return {"type": "stderr", "data": f"[joblet] /work files: {note}\n"}

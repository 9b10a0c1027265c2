"""What a job left in /work, copied to the agent's files folder after its end, with its limits.

`copy_work` is `sequence.collect_work`'s copy. A job held by jnb-holder (holder.c) has no Python
in its holder any more: when its /work is not empty, the holder runs this module as a short-lived
child in its own mount namespace (where the job's root still is), `python -m ... ARGS` with ARGS
the JSON that `work_args` makes, and reads back the line "files bytes", then each note as its
stderr event's line without its `seq` (so the log gets exactly the line eventfile.encode writes).
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from ..eventfile import encode
from ..fs import copy_tree

if TYPE_CHECKING:  # the copier's child imports as little as it can: its start is its cost
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


def work_args(root_dir: str, artifacts_dir: str, limit_bytes: int, limit_entries: int | None) -> str:
    return json.dumps([root_dir, artifacts_dir, limit_bytes, limit_entries])


def note_event(note: str) -> dict[str, str]:
    return {"type": "stderr", "data": f"[joblet] /work files: {note}\n"}


def main(argv: list[str]) -> int:
    root_dir, artifacts_dir, limit_bytes, limit_entries = json.loads(argv[0])
    files, size, notes = copy_work(root_dir, artifacts_dir, limit_bytes, limit_entries)
    prefix = len(b'{"seq":0,')
    out = f"{files} {size}\n".encode() + b"".join(encode(0, note_event(n))[prefix:] for n in notes)
    os.write(1, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

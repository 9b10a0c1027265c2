"""`%joblet runtime list|info|test|remove|build`: the admin's view of an agent's runtimes.

A build is an ordinary job of type `runtime-build` from the client's side: its events carry
`progress` (shown as a bar) and the build log (streamed into the cell like any output).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.display import display

from .display import mapping_table, runtimes_table
from ..core.errors import JobFailed
from ..core.stream import JobFollower

if TYPE_CHECKING:
    from .magics import JobletMagics


def run_action(magics: "JobletMagics", args: Any) -> None:
    action = args.action
    if action == "list":
        display(runtimes_table(magics.client(args.node).runtimes()))
    elif action == "info":
        display(mapping_table(magics.client(args.node).runtime(args.name), f"runtime {args.name}"))
    elif action == "test":
        _test(magics, args)
    elif action == "remove":
        magics.admin_client(args.node).remove_runtime(args.name)
        _note(f"runtime {args.name} removed")
    elif action == "build":
        _build(magics, args)


def _test(magics: "JobletMagics", args: Any) -> None:
    """Run the runtime's own test; the agent either answers at once or starts a job to follow."""
    client = magics.client(args.node)
    answer = client.test_runtime(args.name)
    job_id = answer.get("job_id") or answer.get("id")
    if job_id and answer.get("status") not in ("COMPLETED", "FAILED", "STOPPED"):
        result = JobFollower(client, str(job_id)).follow()
        record = result.record
        if not result.ok:
            raise JobFailed(record, result.stderr_tail, magics.stderr_tail_lines)
        _note(f"runtime {args.name}: test passed (job {job_id})")
        return
    for key in ("stdout", "output"):
        if answer.get(key):
            print(answer[key], end="" if str(answer[key]).endswith("\n") else "\n")
    passed = answer.get("ok", answer.get("passed", answer.get("status") == "COMPLETED"))
    shown = {k: v for k, v in answer.items() if k not in ("stdout", "output", "stderr")}
    display(mapping_table(shown, f"runtime {args.name}: test"))
    if not passed:
        raise JobFailed({"id": job_id or f"test of {args.name}", **answer},
                        str(answer.get("stderr", "")), magics.stderr_tail_lines)


def _build(magics: "JobletMagics", args: Any) -> None:
    client = magics.admin_client(args.node)
    if args.spec:
        spec = _read(args.spec)
        files = {os.path.basename(f): _read(f) for f in args.file}
        started = client.build_runtime(args.name, spec=spec, files=files)
    else:
        if args.file:
            raise UsageError("--file goes with --spec (a runtime of your own)")
        started = client.build_runtime(args.name, force=args.force)
    job_id = str(started["id"])
    _note(f"building runtime {args.name} in job {job_id}")
    progress = None
    if magics.widgets_enabled():
        from .widgets import BuildProgress

        progress = BuildProgress(args.name)
        progress.show()
    follower = JobFollower(client, job_id, on_event=progress.on_event if progress else _text_progress)
    try:
        result = follower.follow()
    finally:
        if progress is not None:
            progress.refresh_display()
    if not result.ok:
        raise JobFailed(result.record, result.stderr_tail, magics.stderr_tail_lines)
    _note(f"runtime {args.name} built")


def _text_progress(event: dict[str, Any]) -> None:
    if event.get("type") == "progress":
        step = f"[{event.get('step')}/{event.get('steps')}] " if event.get("steps") else ""
        _note(f"{step}{event.get('phase', '')}: {event.get('message', '')}")


def _read(path: str) -> str:
    try:
        with open(os.path.expanduser(path)) as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _note(message: str) -> None:
    from .magics import note

    note(message)

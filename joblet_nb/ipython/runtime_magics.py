"""`%joblet runtime list|info|test|remove|build`: the admin's view of an agent's runtimes.

A build is an ordinary job of type `runtime-build` from the client's side: its events carry
`progress` (shown as a bar) and the build log (streamed into the cell like any output).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Protocol

from IPython.core.error import UsageError
from IPython.display import display

from ..core.client import JobletClient
from ..core.errors import JobFailed
from ..core.events import Event, ProgressEvent
from ..core.records import to_json
from ..core.stream import JobFollower
from .display import mapping_table, note, runtimes_table


class Host(Protocol):
    """What these commands need of the magics that run them."""

    stderr_tail_lines: int

    def client(self, node: str | None = None) -> JobletClient: ...

    def admin_client(self, node: str | None = None) -> JobletClient: ...

    def widgets_enabled(self) -> bool: ...


def run_action(host: Host, args: Any) -> None:
    """One `%joblet runtime ACTION [NAME]`, its arguments parsed by the magic."""
    action = args.action
    if action == "list":
        display(runtimes_table(host.client(args.node).runtimes()))
    elif action == "info":
        display(mapping_table(to_json(host.client(args.node).runtime(args.name)), f"runtime {args.name}"))
    elif action == "test":
        _test(host, args)
    elif action == "remove":
        host.admin_client(args.node).remove_runtime(args.name)
        note(f"runtime {args.name} removed")
    elif action == "build":
        _build(host, args)


def _test(host: Host, args: Any) -> None:
    """Run the runtime's own test; the agent answers once the test job has ended."""
    answer = host.client(args.node).test_runtime(args.name)
    if answer.stdout:
        print(answer.stdout, end="" if answer.stdout.endswith("\n") else "\n")
    if answer.stderr:  # shown once here; the failure below does not repeat it
        print(answer.stderr, end="" if answer.stderr.endswith("\n") else "\n", file=sys.stderr)
    shown = {k: v for k, v in to_json(answer).items() if k not in ("stdout", "stderr")}
    display(mapping_table(shown, f"runtime {args.name}: test"))
    if not answer.ok:
        raise JobFailed(answer.record(), answer.stderr, host.stderr_tail_lines)


def _build(host: Host, args: Any) -> None:
    client = host.admin_client(args.node)
    if args.spec:
        spec = _read(args.spec)
        files = {os.path.basename(f): _read(f) for f in args.file}
        started = client.build_runtime(args.name, spec=spec, files=files)
    else:
        if args.file:
            raise UsageError("--file goes with --spec (a runtime of your own)")
        started = client.build_runtime(args.name, force=args.force)
    note(f"building runtime {args.name} in job {started.id}")
    progress = None
    if host.widgets_enabled():
        from .widgets import BuildProgress

        progress = BuildProgress(args.name)
        progress.show()
    follower = JobFollower(client, started.id, on_event=progress.on_event if progress else _text_progress)
    try:
        result = follower.follow()
    finally:
        if progress is not None:
            progress.stop()
            progress.refresh_display()
    failure = result.failure(host.stderr_tail_lines)
    if failure is not None:
        raise failure
    note(f"runtime {args.name} built")


def _text_progress(event: Event) -> None:
    if isinstance(event, ProgressEvent):
        note(event.text())


def _read(path: str) -> str:
    try:
        with open(os.path.expanduser(path)) as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None

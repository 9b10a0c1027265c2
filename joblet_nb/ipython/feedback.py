"""What a `%%joblet run` cell tells its user beyond the job's own output: the last-line value and
figures the sandbox returned, the one-line hint of a failure, and the option meant by a mistyped one.

The magics stay parsing and display; the rules live in `core.hints` (pure) and here only the
notebook's knowledge is gathered: which names earlier sandboxed cells set, what the kernel holds,
which runtimes the agent has.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from ..core.client import JobletClient
from ..core.errors import JobletError
from ..core.events import DisplayEvent
from ..core.hints import FailureContext, hint, suggest_option
from ..core.stream import JobResult

UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")


def show_display(event: DisplayEvent) -> None:
    """A bundle from the sandbox, filtered again here (never trust what the agent passed on)."""
    from IPython.display import publish_display_data

    from ..core.untrusted import filter_bundle

    publish_display_data(filter_bundle(event.data))


def assigned_names(source: str) -> set[str]:
    """Names a cell binds at its top level (assignments, imports, defs, loops, with-as)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        else:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    names.add(sub.id)
    return names


def failure_hint(client: JobletClient, result: JobResult, earlier: dict[str, str],
                 notebook_names: Any) -> str | None:
    """The hint line of a failed cell, or None."""
    runtimes: list[dict[str, Any]] = []
    if "ModuleNotFoundError" in result.stderr_tail:
        try:
            runtimes = [{"name": rt.name, "packages": rt.extra.get("packages") or []}
                        for rt in client.runtimes()]
        except JobletError:
            pass
    ctx = FailureContext(network=result.record.network, runtime=result.record.runtime,
                         runtimes=runtimes, earlier=earlier, notebook_names=notebook_names)
    return hint(result.stderr_tail, ctx)


def option_hint(message: str, parser: Any) -> str:
    """`message` of an argument error, with the option that was meant where one is close."""
    match = UNRECOGNIZED.search(message)
    if not match or parser is None:
        return message
    known = [s for action in parser._actions for s in action.option_strings]  # noqa: SLF001
    for word in match.group(1).split():
        if word.startswith("-"):
            meant = suggest_option(word, known)
            if meant:
                return f"{message}; {word.split('=', 1)[0]} is not an option: did you mean {meant}?"
    return message

"""Tab completion from the session's namespace: in a `%%joblet run --session` cell's body and, while
`%joblet auto` is on, in every cell (IPython matcher API v2)."""

from __future__ import annotations

from typing import Any

from IPython.core.completer import CompletionContext, SimpleCompletion, context_matcher

from ..core.errors import JobletError
from .completion import CellCompleter


def cursor_offset(text: str, line: int, column: int) -> int:
    """IPython gives (line, column); the agent wants an offset into the cell."""
    lines = text.split("\n")
    return sum(len(part) + 1 for part in lines[:line]) + column


def ask(keeper: Any, code: str, line: int, column: int) -> tuple[list[str], str] | None:
    """The session's matches at (line, column) of `code` and the text before the cursor they
    replace; None without a live session or when the agent does not answer."""
    session = keeper.session
    if session is None or session.ended is not None:
        return None
    pos = min(cursor_offset(code, line, column), len(code))
    try:
        reply = session.complete(code, pos)
    except JobletError:
        return None
    start = max(0, min(int(reply.get("cursor_start", pos)), pos))
    return [m for m in reply.get("matches", []) if isinstance(m, str)], code[start:pos]


def body_completer(keeper: Any) -> CellCompleter:
    """The `cell_completer` of completion.JobletCompleter: a `--session` cell's body asks the session."""

    def complete_body(body: str, line: int, column: int) -> tuple[list[str], str | None]:
        return ask(keeper, body, line, column) or ([], None)

    return complete_body


def make_matcher(keeper: Any) -> Any:
    """A matcher that asks the session; nothing (and no delay) when auto is off or no session runs."""

    @context_matcher(identifier="joblet-session")
    def session_matcher(context: CompletionContext) -> dict[str, Any]:
        found = ask(keeper, context.full_text, context.cursor_line, context.cursor_position) \
            if keeper.auto else None
        if found is None:
            return {"completions": [], "suppress": False}
        matches, fragment = found
        # nothing in the session: the typed text itself, so no name of this kernel is offered
        # (IPython lets a matcher silence the others only with a completion of its own)
        offered = matches or ([fragment] if fragment else [])
        return {"completions": [SimpleCompletion(text=m, type="session") for m in offered],
                "matched_fragment": fragment, "suppress": True}

    return session_matcher

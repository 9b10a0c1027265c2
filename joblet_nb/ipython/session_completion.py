"""Tab completion from the session's namespace while `%joblet auto` is on (IPython matcher API v2)."""

from __future__ import annotations

from typing import Any

from IPython.core.completer import CompletionContext, SimpleCompletion, context_matcher

from ..core.errors import JobletError


def cursor_offset(text: str, line: int, column: int) -> int:
    """IPython gives (line, column); the agent wants an offset into the cell."""
    lines = text.split("\n")
    return sum(len(part) + 1 for part in lines[:line]) + column


def make_matcher(keeper: Any) -> Any:
    """A matcher that asks the session; nothing (and no delay) when auto is off or no session runs."""

    @context_matcher(identifier="joblet-session")
    def session_matcher(context: CompletionContext) -> dict[str, Any]:
        session = keeper.session
        if not keeper.auto or session is None or session.ended is not None:
            return {"completions": [], "suppress": False}
        code = context.full_text
        pos = min(cursor_offset(code, context.cursor_line, context.cursor_position), len(code))
        try:
            reply = session.complete(code, pos)
        except JobletError:
            return {"completions": [], "suppress": False}
        start = max(0, min(int(reply.get("cursor_start", pos)), pos))
        matches = [m for m in reply.get("matches", []) if isinstance(m, str)]
        return {"completions": [SimpleCompletion(text=m, type="session") for m in matches],
                "matched_fragment": code[start:pos], "suppress": True}

    return session_matcher

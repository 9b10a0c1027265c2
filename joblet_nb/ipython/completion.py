"""Tab completion of `%joblet` / `%%joblet`: subcommands, their options and choices, and nothing
from the host kernel inside a `%%joblet` cell (the sandbox has none of the kernel's variables).

One IPython matcher (completer API v2), registered when the extension loads. What it offers is read
from the magics' own `magic_arguments` parsers, so a new option completes without a change here.
IPython lets a matcher silence the others (Jedi, the namespace) only when it has a completion, so
in a cell body it offers the token itself: Tab then changes nothing. In a `%%joblet run --session`
cell, `cell_completer` (set by the notebook's session) answers for the body from the session's
namespace instead.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from IPython.core.completer import CompletionContext, SimpleCompletion, SimpleMatcherResult, context_matcher

# (cell body, line, column) -> (matches, the text before the cursor they replace; None: IPython's token)
CellCompleter = Callable[[str, int, int], tuple[list[str], str | None]]
PRIORITY = 100.0  # ahead of Jedi and the namespace matchers


def _parser(handler: Any) -> argparse.ArgumentParser | None:
    return getattr(handler, "parser", None)


def _offers(parser: argparse.ArgumentParser | None, words: list[str], token: str) -> list[str]:
    """Options (for a token starting with '-') or the next positional's choices."""
    if parser is None:
        return []
    actions = parser._actions  # noqa: SLF001 - argparse keeps no public list of its actions
    if token.startswith("-"):
        return sorted({s for a in actions for s in a.option_strings if s.startswith("--") or len(token) < 2})
    takes_value = {s for a in actions if a.option_strings and a.nargs != 0 for s in a.option_strings}
    positional = [w for i, w in enumerate(words)
                  if not w.startswith("-") and not (i and words[i - 1] in takes_value)]
    choices = [a.choices for a in actions if not a.option_strings]
    if len(positional) < len(choices) and choices[len(positional)]:
        return [str(c) for c in choices[len(positional)]]
    return []


class JobletCompleter:
    """Completes for one `JobletMagics` instance (its handlers give subcommands and parsers)."""

    def __init__(self, magics: Any):
        self.magics = magics
        self.cell_completer: CellCompleter | None = None

    def matches(self, full_text: str, line: int, column: int) -> tuple[list[str], str | None] | None:
        """What to offer at (line, column), and the text it replaces (None: IPython's token);
        None where the text is no `%joblet` magic of ours."""
        lines = full_text.split("\n")
        first = lines[0].lstrip()
        if first.startswith("%%joblet") and line > 0:
            if "--session" not in first.split():
                return [], None   # a fresh sandbox: no names of this kernel, none of a session
            return self._cell_body("\n".join(lines[1:]), line - 1, column)
        current = lines[line][:column].lstrip()
        for prefix in ("%%joblet", "%joblet"):
            if current.startswith(prefix + " "):
                return self._line(current[len(prefix):].split(" "), cell=prefix == "%%joblet"), None
        return None

    def _cell_body(self, body: str, line: int, column: int) -> tuple[list[str], str | None]:
        if self.cell_completer is None:
            return [], None
        try:
            found, fragment = self.cell_completer(body, line, column)
            return list(found), fragment
        except Exception:  # noqa: BLE001 - a completer must never break typing
            return [], None

    def _line(self, words: list[str], cell: bool) -> list[str]:
        words = [w for w in words[:-1] if w] + [words[-1]]
        token = words[-1]
        handlers = self.magics._handlers()  # noqa: SLF001 - the magics' own subcommand table
        if len(words) == 1:
            names = sorted(handlers)
            offered = [n for n in names if n.startswith(token)]
            if cell or token.startswith("-"):  # `%%joblet --max-memory 1G` means run
                offered += _offers(_parser(handlers.get("run")), [], token)
            return offered
        sub = words[0]
        if sub.startswith("-"):
            sub, words = "run", [""] + words
        return [o for o in _offers(_parser(handlers.get(sub)), words[1:-1], token) if o.startswith(token)]


def register(shell: Any, magics: Any) -> JobletCompleter:
    """Add the matcher to the shell's completer (once); returns it, for a session to plug into."""
    completer = JobletCompleter(magics)

    @context_matcher(priority=PRIORITY, identifier="joblet")
    def joblet_matcher(context: CompletionContext) -> SimpleMatcherResult:
        offer = completer.matches(context.full_text, context.cursor_line, context.cursor_position)
        if offer is None:
            return {"completions": [], "suppress": False}
        found, fragment = offer
        if not found:  # a body with nothing to offer completes to itself
            found, fragment = [context.token], None
        result: SimpleMatcherResult = {"completions": [SimpleCompletion(text=t, type="joblet") for t in found],
                                       "suppress": True}
        if fragment is not None:
            result["matched_fragment"] = fragment
        return result

    matchers = shell.Completer.custom_matchers
    matchers[:] = [m for m in matchers if getattr(m, "matcher_identifier", "") != "joblet"]
    matchers.append(joblet_matcher)
    return completer


def unregister(shell: Any) -> None:
    matchers = shell.Completer.custom_matchers
    matchers[:] = [m for m in matchers if getattr(m, "matcher_identifier", "") != "joblet"]

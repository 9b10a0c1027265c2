"""`%joblet session ...`, `%%joblet run --session` and `%joblet auto`: a notebook's sandboxed session.

A cell sent to the session shows as a local cell would: streams as they come, display data (filtered
again before it is published), the last expression as `execute_result` with the cell's execution
count (the magic returns an object whose mime bundle is the session's), and an error with the
session's own traceback, raised so nbclient and papermill fail. Ctrl-C interrupts the cell in the
session; the session and its variables stay. Under `%joblet auto` every cell goes to the session
(an input transformer rewrites it as `%%joblet run --session`), except cells that start with
`%joblet`/`%%joblet`, and each shows a small mark that it ran in the sandbox. The kernel's exit
ends the session.
"""

from __future__ import annotations

import atexit
import html
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display, publish_display_data

from ..core.errors import JobletError, OutputsMissing
from ..core.records import to_json
from ..core.request import collect_inputs, effective_runtime, limits_from, names, parse_env, \
    parse_seconds, read_upload
from ..core.session import Session, SessionEnded, remote_error
from ..core.untrusted import filter_bundle
from .display import lean_publishing, mapping_table, note

LOCAL_PREFIXES = ("%joblet", "%%joblet")
SECOND_INTERRUPT = "not waiting for the interrupted cell any more; it may still be ending in the session"


class RemoteResult:
    """The session's value of a cell's last expression, shown by IPython's displayhook."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return self.data

    def __repr__(self) -> str:
        return self.data.get("text/plain", "")


class SkipCell(Exception):
    """The session's runtime is missing and the notebook said `--or-skip`."""

    def __init__(self, runtime: str) -> None:
        super().__init__(runtime)
        self.runtime = runtime


class SessionKeeper:
    """This kernel's session: which one, with what options, whether auto is on."""

    def __init__(self, magics: Any) -> None:
        self.magics = magics
        self.session: Session | None = None
        self.options: dict[str, Any] = {}
        self.auto = False
        self.skipped: str | None = None   # the runtime a `require --or-skip` notebook lacks
        self._matcher: Any = None
        completer = getattr(magics, "completer", None)
        if completer is not None:   # a `%%joblet run --session` cell's body completes from the session
            from .session_completion import body_completer
            completer.cell_completer = body_completer(self)
        atexit.register(self.end)   # the kernel's shutdown or restart ends the session

    @property
    def shell(self) -> Any:
        return self.magics.shell

    # ---- lifecycle ------------------------------------------------------------------------

    def begin(self, options: dict[str, Any]) -> Session:
        self.end()
        self.session = Session.start(self.magics.client(), **options)
        self.options = options
        return self.session

    def end(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            try:
                session.stop()
            except JobletError:
                pass

    def current(self) -> Session:
        if self.session is None and self.skipped:
            raise SkipCell(self.skipped)
        if self.session is None:
            raise UsageError("no joblet session: start one with `%joblet session start [-r RUNTIME]`")
        return self.session

    # ---- one cell -------------------------------------------------------------------------

    def run_cell(self, code: str, inputs: list[str], outputs: list[str], mark: bool) -> RemoteResult | None:
        try:
            session = self.current()
        except SkipCell as skip:
            note(f"skipped: runtime {skip.runtime!r} is not on this agent, so this notebook has no session")
            return None
        values, sizes = collect_inputs(inputs, self.shell.user_ns)
        if sizes:
            note("in: " + "; ".join(sizes))
        cell = session.submit(code, values, outputs)
        if mark:
            self._mark(session, cell)
        for event in session.take_orphans():
            _write_stream(event)
        return self._follow(session, cell, outputs)

    def _follow(self, session: Session, cell: int, outputs: list[str]) -> RemoteResult | None:
        result, error, interrupted = None, None, False
        while True:
            try:
                event = session.next_event(cell)
            except KeyboardInterrupt:
                if interrupted:
                    raise KeyboardInterrupt(SECOND_INTERRUPT) from None
                interrupted = True
                session.interrupt()
                continue
            kind = event.get("type")
            if kind in ("stdout", "stderr"):
                _write_stream(event)
            elif kind == "display":
                sys.stdout.flush()
                publish_display_data(filter_bundle(event.get("data")))
            elif kind == "result":
                result = RemoteResult(filter_bundle(event.get("data")))
            elif kind == "error":
                error = remote_error(event)
            elif kind == "exit":
                raise SessionEnded(session.id, event.get("reason"), event.get("message"))
            elif kind == "cell_end":
                self._assign(event, outputs)
                if error is not None:
                    raise error
                return result

    def _assign(self, end: dict[str, Any], outputs: list[str]) -> None:
        values = end.get("outputs") or {}
        for name, value in values.items():
            if name in outputs:
                self.shell.user_ns[name] = value
        problems = [f"{n} not defined in the session" for n in end.get("missing") or []]
        problems += [f"{n}: {why}" for n, why in (end.get("errors") or {}).items()]
        if end.get("error"):
            problems.append(str(end["error"]))
        if problems:
            raise OutputsMissing("--out: " + "; ".join(problems))

    def _mark(self, session: Session, cell: int) -> None:
        runtime = self.options.get("runtime") or "base python3"
        text = f"sandbox · session {session.id[:8]} · {runtime} · cell {cell}"
        mark = {"text/plain": f"[{text}]",
                "text/html": f'<div class="joblet-session-mark" style="font-size:10px;'
                             f'color:#999;line-height:1.2">&#9635; {html.escape(text)}</div>'}
        with lean_publishing(self.shell):  # nothing of this cell waits yet: no flush
            publish_display_data(mark)

    # ---- auto ------------------------------------------------------------------------------

    def set_auto(self, on: bool) -> None:
        transformers = self.shell.input_transformers_cleanup
        if on and self.route not in transformers:
            transformers.append(self.route)
        if not on and self.route in transformers:
            transformers.remove(self.route)
        self.auto = on
        self._completion(on)

    def route(self, lines: list[str]) -> list[str]:
        """Auto mode: the cell as `%%joblet run --session --mark` unless it is a %joblet magic."""
        first = next((line.strip() for line in lines if line.strip()), "")
        if not self.auto or not first or first.startswith(LOCAL_PREFIXES):
            return lines
        return ["%%joblet run --session --mark\n"] + lines

    def _completion(self, on: bool) -> None:
        completer = getattr(self.shell, "Completer", None)
        if completer is None:
            return
        if self._matcher is None:
            from .session_completion import make_matcher
            self._matcher = make_matcher(self)
        matchers = completer.custom_matchers
        if on and self._matcher not in matchers:
            matchers.append(self._matcher)
        elif not on and self._matcher in matchers:
            matchers.remove(self._matcher)


def _write_stream(event: dict[str, Any]) -> None:
    """Written, not flushed: the kernel sends what waits every 0.2 s and before anything else of
    the cell (display data, its value, an error, its end), so a cell costs no extra wait for the
    kernel's I/O thread and a chatty one sends a few large messages."""
    stream = sys.stderr if event.get("type") == "stderr" else sys.stdout
    stream.write(str(event.get("data", "")))


# ---- the subcommands ----------------------------------------------------------------------------

def keeper_of(magics: Any) -> SessionKeeper:
    keeper = getattr(magics, "_session_keeper", None)
    if keeper is None:
        keeper = magics._session_keeper = SessionKeeper(magics)
    return keeper


@magic_arguments("%joblet session")
@argument("action", choices=["start", "stop", "status", "restart", "attach"])
@argument("-r", "--runtime", metavar="NAME", help="runtime of the session (`base`: the system python3)")
@argument("--max-memory", metavar="SIZE", help="memory limit, e.g. 512M, 1G")
@argument("--max-cpu", metavar="PCT", help="CPU limit in percent of one CPU")
@argument("--pids", type=int, metavar="N", help="most processes/threads at once")
@argument("--timeout", metavar="SECS", help="the session's whole life, e.g. 2h")
@argument("--disk", metavar="SIZE", help="writable space of /work and /tmp, e.g. 1G")
@argument("--max-io", metavar="RATE", help="block I/O bytes per second")
@argument("--gpus", type=int, metavar="N", help="GPUs for the session (an agent with executor: slurm)")
@argument("--network", nargs="?", const="bridge", metavar="MODE", help="give the session a network (bridge)")
@argument("--idle-timeout", metavar="SECS", help="end the session after this long without a cell")
@argument("--env", action="append", default=[], metavar="K=V", help="environment variable (repeatable)")
@argument("--upload", action="append", default=[], metavar="PATH[:DEST]", help="a local file into /work")
def session_command(magics: Any, rest: str) -> None:
    """A session: one sandbox whose Python keeps its variables between cells.

    start: a new session (the old one ends); stop; status; restart (same options, variables gone);
    attach: show the output of the session's last cell again, from the agent's log.
    """
    args = parse_argstring(session_command, rest)
    keeper = keeper_of(magics)
    if args.action == "start":
        options = _options(magics, args)
        if options.get("runtime") in magics.skip_runtimes:
            keeper.end()
            keeper.skipped = options["runtime"]
            note(f"skipped: runtime {keeper.skipped!r} is not on this agent; session cells are skipped")
            return
        keeper.skipped = None
        session = keeper.begin(options)
        note(f"session {session.id} started ({options.get('runtime') or 'base python3'}); "
              f"`%joblet auto` sends every cell to it, `%%joblet run --session` one cell")
    elif args.action == "restart":
        options = keeper.options
        keeper.begin(options)
        note(f"session restarted as {keeper.current().id}; its variables are gone")
    elif args.action == "stop":
        had = keeper.session
        keeper.end()
        note(f"session {had.id} ended" if had else "no session to stop")
    elif args.action == "status":
        record = keeper.current().record()
        display(mapping_table(record, f"joblet session {record.get('id')}"))
    else:
        _attach(keeper.current())


def _options(magics: Any, args: Any) -> dict[str, Any]:
    """The body of POST /v1/sessions: these options over the notebook's defaults (`%joblet use`)."""
    defaults = magics.defaults()
    limits = limits_from(args.max_memory, args.max_cpu, args.pids, args.timeout, args.disk, args.max_io,
                         args.gpus)
    options: dict[str, Any] = {
        "runtime": effective_runtime(args.runtime, defaults.runtime),
        "limits": to_json(limits.over(defaults.limits)) or None,
        "network": args.network or defaults.network or None,
        "env": parse_env(args.env) or None,
        "uploads": [read_upload(u).to_json() for u in args.upload] or None,
    }
    if args.idle_timeout:
        options["idle_timeout_s"] = parse_seconds(args.idle_timeout, "--idle-timeout")
    return options


def _attach(session: Session) -> None:
    """The last cell's output again, from the agent's event log (after a browser reconnect)."""
    events = session.history()
    starts = [i for i, e in enumerate(events) if e.get("type") == "cell_start"]
    for event in events[starts[-1]:] if starts else []:
        if event.get("type") in ("stdout", "stderr"):
            _write_stream(event)
        elif event.get("type") in ("display", "result"):
            publish_display_data(filter_bundle(event.get("data")))
        elif event.get("type") == "error":
            _write_stream({"type": "stderr", "data": "".join(remote_error(event)._render_traceback_()) + "\n"})


def auto_command(magics: Any, rest: str) -> None:
    """`%joblet auto`: every following cell runs in the session; `%joblet auto off` stops that."""
    keeper = keeper_of(magics)
    word = rest.strip().lower()
    if word in ("off", "false", "0"):
        keeper.set_auto(False)
        note("auto off: cells run in this kernel again")
        return
    if word not in ("", "on"):
        raise UsageError("%joblet auto [off]")
    if keeper.session is None:
        keeper.begin(_options(magics, parse_argstring(session_command, "start")))
    keeper.set_auto(True)
    note(f"auto on: every cell runs in session {keeper.current().id[:8]} until `%joblet auto off`")


def run_in_session(magics: Any, args: Any, cell: str | None) -> RemoteResult | None:
    """`%%joblet run --session`: the cell in this kernel's session."""
    if cell is None:
        raise UsageError("%%joblet run --session runs the cell below it; put the code there")
    return keeper_of(magics).run_cell(cell, names(args.inputs), names(args.outputs), mark=args.mark)


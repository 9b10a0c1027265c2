"""`%joblet` and `%%joblet`: argument parsing and display over `JobletClient`.

Nothing here talks HTTP or follows a stream itself (ipyparallel's lesson: thin magics over a real
client). Tokens never come from arguments: they would be saved in the notebook and its history.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Bool, Dict, Float, Int, Unicode
from traitlets.config import Configurable

from . import artifacts, feedback, runtime_magics, session_magics, setup_magics
from ..core.client import JobletClient
from ..core.config import Settings, UnknownNode, resolve_node
from ..core.errors import AgentTimeout, JobInterrupted, JobletError, OutputsMissing
from ..core.records import JobLimits
from ..core.request import (Defaults, OptionError, RunOptions, build_request, collect_inputs,
                            effective_runtime, limits_from, names, parse_env)
from ..core.stream import JobFollower, JobResult
from .display import ended_text, jobs_table, note, record_table

KEPT_CLIENTS = 8  # clients (agents x tokens) a notebook keeps, with their connections


def _limit_arguments(func: Callable) -> Callable:
    """The limit options shared by `run` and `use` (applied in source order)."""
    for deco in reversed([
        argument("--max-memory", metavar="SIZE", help="memory limit, e.g. 512M, 1G (bare number: MB)"),
        argument("--max-cpu", metavar="PCT", help="CPU limit in percent of one CPU (200 = two CPUs)"),
        argument("--pids", type=int, metavar="N", help="most processes/threads at once"),
        argument("--timeout", metavar="SECS", help="wall-clock limit in seconds (or 5m, 1h)"),
        argument("--disk", metavar="SIZE", help="writable space of /work and /tmp, e.g. 1G"),
        argument("--max-io", metavar="RATE", help="block I/O bytes per second, e.g. 10M"),
        argument("--gpus", type=int, metavar="N", help="GPUs for the job (an agent with executor: slurm)"),
        argument("--network", nargs="?", const="bridge", metavar="MODE",
                 help="give the job a network (default mode: bridge); none without this"),
    ]):
        func = deco(func)
    return func


@magics_class
class JobletMagics(Magics, Configurable):
    """Run notebook cells in isolated sandboxes on a joblet agent."""

    url = Unicode("", help="agent URL; empty: JOBLET_URL, then ~/.config/joblet/client.json").tag(config=True)
    token_file = Unicode("", help="file holding the user token; empty: JOBLET_TOKEN, then client.json").tag(config=True)
    admin_token_file = Unicode("", help="file holding the admin token; empty: JOBLET_ADMIN_TOKEN, then ~/.config/joblet/admin-token").tag(config=True)
    cert_file = Unicode("", help="the HTTPS agent's certificate to pin; empty: JOBLET_CERT, then client.json").tag(config=True)
    nodes = Dict(help="named agents for --node: {'gpu': {'url': ..., 'token_file': ..., 'cert_file': ...}}").tag(config=True)
    default_runtime = Unicode("", help="runtime of cells without -r; empty: the base system python3").tag(config=True)
    default_limits = Dict(help="limits of cells that do not set them: memory_mb, cpu_percent, pids, timeout_s, disk_mb, io_bps").tag(config=True)
    default_network = Unicode("", help="network of cells without --network; empty: the agent's default (none)").tag(config=True)
    stream_output = Bool(True, help="write output as it arrives; False: all at once when the job ends").tag(config=True)
    raise_on_error = Bool(True, help="a failed job fails the cell (nbclient/papermill stop); --allow-error opts out per cell").tag(config=True)
    show_status = Bool(True, help="show a live status line widget while a cell runs (kernels only)").tag(config=True)
    status_interval = Float(1.0, help="seconds between status line refreshes").tag(config=True)
    stderr_tail_lines = Int(0, help="lines of the job's stderr repeated under a failure (its output, traceback included, is in the cell already)").tag(config=True)
    http_timeout = Float(30.0, help="seconds to wait for the agent to answer a call").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        self.background: dict[str, RunOptions] = {}  # job id -> the options of its --bg run
        self.skip_runtimes: set[str] = set()          # `require --or-skip` of runtimes the agent lacks
        self.last_result: JobResult | None = None
        self._clients: dict[tuple[Any, ...], JobletClient] = {}  # by settings: see `client`
        self.sandbox_names: dict[str, str] = {}      # name -> job id of the %%joblet cell that set it

    # ---- connection ---------------------------------------------------------------------

    def settings(self, node: str | None = None) -> Settings:
        """Where the agent is and who we are, resolved now so env and %config changes apply."""
        try:
            return resolve_node(self.nodes, node, self.url, self.token_file, self.admin_token_file,
                                self.cert_file)
        except UnknownNode as exc:
            raise UsageError(
                f"{exc}; configure one with %config JobletMagics.nodes = {{'{node}': "
                f"{{'url': 'http://HOST:7755', 'token_file': '/path/to/token'}}}}") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"{exc}; fix JobletMagics.token_file or unset it") from None

    def client(self, node: str | None = None) -> JobletClient:
        """A client for this call (of a named agent of `nodes` with `node`). The settings are
        resolved every time; the client of the same settings is kept, with its connection."""
        settings = self.settings(node)
        key = (settings.url, settings.token, settings.admin_token, settings.cert, self.http_timeout)
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= KEPT_CLIENTS:
                self._clients.pop(next(iter(self._clients))).release()
            client = self._clients[key] = JobletClient.from_settings(settings, timeout=self.http_timeout)
        return client

    def admin_client(self, node: str | None = None) -> JobletClient:
        """The admin token for every call, so it can also follow and stop build jobs."""
        c = self.client(node)
        if not c.admin_token:
            raise JobletError(
                f"this needs the admin token for {c.url}: set JOBLET_ADMIN_TOKEN, "
                f"JobletMagics.admin_token_file, or ~/.config/joblet/admin-token (admin token: {c.admin_source})"
            )
        return c.with_token(c.admin_token, c.admin_source)

    def defaults(self) -> Defaults:
        """What cells that do not say otherwise run with."""
        try:
            limits = JobLimits.from_json(self.default_limits)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"JobletMagics.default_limits: {exc}") from None
        return Defaults(self.default_runtime, limits, self.default_network)

    def widgets_enabled(self) -> bool:
        """Widgets only where a kernel can render them; a terminal gets text lines."""
        return self.show_status and getattr(self.shell, "kernel", None) is not None

    # ---- the magic ----------------------------------------------------------------------

    @line_cell_magic
    def joblet(self, line: str, cell: str | None = None) -> Any:
        sub, _, rest = line.strip().partition(" ")
        if cell is not None and (not sub or sub.startswith("-")):
            sub, rest = "run", line  # `%%joblet --max-memory 1G` means run
        if not sub:
            print(SHORT_HELP)
            return None
        handler = self._handlers().get(sub)
        if handler is None:
            raise UsageError(f"unknown subcommand {sub!r}; one of: {', '.join(self._handlers())} "
                             f"(`%joblet?` shows the help)")
        if cell is not None and sub != "run":
            raise UsageError(f"%%joblet {sub} takes no cell body; only %%joblet run does")
        try:
            return handler(rest.strip(), cell)
        except OptionError as exc:
            raise UsageError(str(exc)) from None
        except UsageError as exc:
            raise UsageError(feedback.option_hint(str(exc), getattr(handler, "parser", None))) from None
        except AgentTimeout as exc:
            raise AgentTimeout(f"{exc.message} (here: %config JobletMagics.http_timeout = 120)") from None
        except JobInterrupted as exc:
            raise exc.with_hint(_next_steps(exc)) from None

    def _handlers(self) -> dict[str, Callable[[str, str | None], Any]]:
        return {
            "run": self._run, "jobs": self._jobs, "status": self._status, "logs": self._logs,
            "attach": self._attach, "stop": self._stop, "delete": self._delete,
            "fetch": self._fetch, "show": self._show, "info": self._info, "use": self._use,
            "require": self._require, "ui": self._ui, "runtime": self._runtime,
            "session": lambda rest, _cell: session_magics.session_command(self, rest),
            "auto": lambda rest, _cell: session_magics.auto_command(self, rest),
        }

    # ---- run ----------------------------------------------------------------------------

    @magic_arguments("%joblet run")
    @argument("-r", "--runtime", metavar="NAME", help="runtime to run in (`base`: the system python3)")
    @_limit_arguments
    @argument("--env", action="append", default=[], metavar="K=V", help="environment variable (repeatable)")
    @argument("--upload", action="append", default=[], metavar="PATH[:DEST]", help="send a local file into /work (repeatable)")
    @argument("--in", dest="inputs", action="append", default=[], metavar="VAR", help="send this notebook variable's JSON value in (repeatable)")
    @argument("--out", dest="outputs", action="append", default=[], metavar="VAR", help="bring the job's variable back as JSON (repeatable)")
    @argument("--show", action="append", default=[], metavar="PATH", help="show an image the job wrote in /work (repeatable)")
    @argument("--fetch", action="append", default=[], metavar="PATH", help="save a file the job wrote in /work next to the notebook")
    @argument("--bg", action="store_true", help="start it and return; `%%joblet attach ID` follows it")
    @argument("--allow-error", action="store_true", help="a failed job does not fail the cell")
    @argument("--node", metavar="NAME", help="a named agent of JobletMagics.nodes")
    @argument("--no-status", action="store_true", help="no live status line")
    @argument("--session", action="store_true", help="run the cell in this notebook's session (`%%joblet session start`)")
    @argument("--mark", action="store_true", help=argparse.SUPPRESS)
    @argument("command", nargs="*", help="line form: a command to run, after --")
    def _run(self, rest: str, cell: str | None) -> Any:
        """Run the cell (a script for the runtime; the base python3 without one) in a sandbox.

        Output streams into the cell as it arrives. A failed job fails the cell with the reason
        (its traceback is in the output once) and a hint where one applies. Ctrl-C stops the job
        and waits for it to end.
        """
        args = parse_argstring(self._run, rest)
        if args.session:
            return session_magics.run_in_session(self, args, cell)
        options = _run_options(args)
        runtime = effective_runtime(options.runtime, self.default_runtime)
        if runtime and runtime in self.skip_runtimes:
            note(f"skipped: runtime {runtime!r} is not on this agent "
                 f"(an admin builds it with `%joblet runtime build {runtime}`)")
            return None
        if cell is not None and options.command:
            raise UsageError("a cell runs as a script; give a command only on the line form "
                             "(%joblet run -- CMD ARGS)")
        if cell is None and not options.command:
            raise UsageError("nothing to run: put code in the cell under %%joblet run, "
                             "or give a command: %joblet run -- ls -la")
        inputs, sizes = collect_inputs(options.inputs, self.shell.user_ns)
        # the script starts on the cell's second line (the first is %%joblet): numbered so, a
        # traceback's line numbers are the ones the notebook shows
        request = build_request(options, None if cell is None else "\n" + cell, self.defaults(), inputs)
        client = self.client(options.node)
        if sizes:
            note("in: " + "; ".join(sizes))
        job_id = client.run_job(request).id
        if options.background:
            self.background[job_id] = options
            note(f"job {job_id} runs in the background: `%joblet attach {job_id}` follows it, "
                 f"`%joblet stop {job_id}` stops it")
            return None
        if cell is not None:
            self.sandbox_names.update(dict.fromkeys(feedback.assigned_names(cell), job_id))
        self._follow(client, job_id, options, stop_on_interrupt=True)
        return None

    def _follow(self, client: JobletClient, job_id: str, options: RunOptions,
                stop_on_interrupt: bool) -> JobResult:
        # the events are read from now on, so the status line is made while the sandbox starts
        follower = JobFollower(client, job_id, live=self.stream_output,
                               on_display=feedback.show_display).start()
        status = tracker = None
        if self.widgets_enabled() and options.status_line:
            from .widgets import StatusLine, StatusTracker

            try:
                status = StatusLine(job_id)
                status.show()
            except BaseException:
                follower.close()
                raise
            follower.on_event = status.on_event
            tracker = StatusTracker(client, status, self.status_interval).start()
        result: JobResult | None = None
        try:
            result = follower.follow(stop_on_interrupt=stop_on_interrupt)
        finally:
            if status is not None and tracker is not None:
                tracker.stop()
                try:
                    status.update(result.record if result else client.get_job(job_id))
                except JobletError:
                    pass
                status.refresh_display()  # the saved notebook shows the final state
        self.last_result = result
        self.background.pop(job_id, None)
        self._deliver(client, result, options)
        return result

    def _deliver(self, client: JobletClient, result: JobResult, options: RunOptions) -> None:
        """`--out` values, `--show` images, `--fetch` files; then fail the cell if anything failed.

        A job that failed fails the cell; so does one that completed without a value that
        `--out` asked for, since the next cell would silently use an old or missing variable.
        """
        tolerant = options.allow_error or not self.raise_on_error
        failure = result.failure(self.stderr_tail_lines)
        if failure is not None:
            earlier = {n: j for n, j in self.sandbox_names.items() if j != result.job_id}
            failure.hint = feedback.failure_hint(client, result, earlier, self.shell.user_ns) or ""
            if not tolerant:
                raise failure
            note(failure.summary() + (f"\n{failure.hint}" if failure.hint else ""))
            return
        values = result.values
        self.shell.user_ns.update({n: values[n] for n in options.outputs if n in values})
        returned = result.returned(options.outputs)
        if returned:
            note("out: " + "; ".join(returned))
        problem = result.missing(options.outputs) if options.outputs else ""
        for line in artifacts.show(client, result.job_id, options.show) if options.show else []:
            note(line)
        for line in artifacts.fetch(client, result.job_id, options.fetch) if options.fetch else []:
            note(line)
        if problem:
            if not tolerant:
                raise OutputsMissing(f"--out: {problem}")
            note(f"out: {problem}")

    # ---- jobs ---------------------------------------------------------------------------

    @magic_arguments("joblet jobs")
    @argument("-n", "--last", type=int, default=20, metavar="N", help="show the last N jobs (default 20)")
    @argument("--all", action="store_true", help="show every job")
    @argument("--node", metavar="NAME")
    def _jobs(self, rest: str, cell: str | None) -> None:
        """List your jobs, newest last (all users' jobs, with the admin token)."""
        args = parse_argstring(self._jobs, rest)
        jobs = sorted(self.client(args.node).list_jobs(), key=lambda j: j.created_at or 0)
        shown = jobs if args.all else jobs[-max(args.last, 0):] if args.last else []
        title = "joblet jobs" if len(shown) == len(jobs) else \
            f"joblet jobs (last {len(shown)} of {len(jobs)}; --all shows every one)"
        display(jobs_table(shown, title))

    @magic_arguments("joblet status")
    @argument("job_id", metavar="ID")
    @argument("--node", metavar="NAME")
    def _status(self, rest: str, cell: str | None) -> None:
        """Show a job's record: status, reason, exit code, limits, usage."""
        args = parse_argstring(self._status, rest)
        display(record_table(self.client(args.node).get_job(args.job_id)))

    @magic_arguments("joblet logs")
    @argument("job_id", metavar="ID")
    @argument("--node", metavar="NAME")
    def _logs(self, rest: str, cell: str | None) -> None:
        """Print a job's output so far, without waiting for it to end."""
        args = parse_argstring(self._logs, rest)
        record = JobFollower(self.client(args.node), args.job_id).history().record
        ended = ended_text(record)
        note(f"job {args.job_id} {record.status.value}" + (f" ({ended})" if ended else ""))

    @magic_arguments("joblet attach")
    @argument("job_id", metavar="ID")
    @argument("--node", metavar="NAME")
    @argument("--allow-error", action="store_true", help="a failed job does not fail the cell")
    def _attach(self, rest: str, cell: str | None) -> None:
        """Follow a job from its first event (e.g. a --bg job, or after the browser reconnected).

        Ctrl-C detaches and leaves the job running; `%joblet stop ID` stops it. The options of
        a --bg run of this session (--out, --show, --fetch) apply when it ends.
        """
        args = parse_argstring(self._attach, rest)
        options = self.background.get(args.job_id) or RunOptions(node=args.node)
        options.allow_error = options.allow_error or args.allow_error
        self._follow(self.client(args.node), args.job_id, options, stop_on_interrupt=False)

    @magic_arguments("joblet stop")
    @argument("job_id", metavar="ID")
    @argument("--node", metavar="NAME")
    def _stop(self, rest: str, cell: str | None) -> None:
        """Stop a job: SIGTERM, then SIGKILL after the agent's grace period."""
        args = parse_argstring(self._stop, rest)
        self.client(args.node).stop(args.job_id)
        note(f"stop sent to job {args.job_id}")

    @magic_arguments("joblet delete")
    @argument("job_id", metavar="ID")
    @argument("--node", metavar="NAME")
    def _delete(self, rest: str, cell: str | None) -> None:
        """Remove a finished job with its logs and files."""
        args = parse_argstring(self._delete, rest)
        self.client(args.node).delete_job(args.job_id)
        self.background.pop(args.job_id, None)
        note(f"job {args.job_id} deleted")

    @magic_arguments("joblet fetch")
    @argument("job_id", metavar="ID")
    @argument("paths", nargs="+", metavar="PATH", help="files in the job's /work")
    @argument("--to", default=".", metavar="DIR", help="local folder (default: the notebook's)")
    @argument("--node", metavar="NAME")
    def _fetch(self, rest: str, cell: str | None) -> None:
        """Save files a job left in /work."""
        args = parse_argstring(self._fetch, rest)
        for line in artifacts.fetch(self.client(args.node), args.job_id, args.paths, args.to):
            note(line)

    @magic_arguments("joblet show")
    @argument("job_id", metavar="ID")
    @argument("paths", nargs="+", metavar="PATH", help="images in the job's /work")
    @argument("--node", metavar="NAME")
    def _show(self, rest: str, cell: str | None) -> None:
        """Show images (png, jpeg, gif, svg) a job left in /work."""
        args = parse_argstring(self._show, rest)
        for line in artifacts.show(self.client(args.node), args.job_id, args.paths):
            note(line)

    # ---- session ------------------------------------------------------------------------

    @magic_arguments("joblet info")
    @argument("--node", metavar="NAME")
    def _info(self, rest: str, cell: str | None) -> None:
        """The agent (URL, version, platform), who you are to it (tokens masked), your defaults."""
        setup_magics.info(self, parse_argstring(self._info, rest))

    @magic_arguments("joblet use")
    @argument("runtime", metavar="RUNTIME", help="runtime for this notebook's cells (`base`: system python3)")
    @_limit_arguments
    @argument("--fallback", metavar="RUNTIME",
              help="where the agent lacks RUNTIME, say so and use this one (e.g. base) instead")
    @argument("--no-check", action="store_true", help="do not ask the agent whether it has the runtime")
    @argument("--node", metavar="NAME")
    def _use(self, rest: str, cell: str | None) -> None:
        """Set this notebook's defaults: a shared notebook declares what it needs in its first cell.

        Fails clearly when the agent lacks the runtime (see `%joblet require`).
        """
        setup_magics.use(self, parse_argstring(self._use, rest))

    @magic_arguments("joblet require")
    @argument("runtimes", nargs="+", metavar="RUNTIME")
    @argument("--or-skip", action="store_true",
              help="where missing, say so and skip the cells that use it instead of failing")
    @argument("--node", metavar="NAME")
    def _require(self, rest: str, cell: str | None) -> None:
        """Fail clearly where the agent lacks a runtime, saying how an admin builds it."""
        setup_magics.require(self, parse_argstring(self._require, rest))

    @magic_arguments("joblet ui")
    @argument("--node", metavar="NAME")
    def _ui(self, rest: str, cell: str | None) -> None:
        """A panel: runtime picker and limit sliders (this notebook's defaults), and your jobs with Stop."""
        args = parse_argstring(self._ui, rest)
        from .panel import ControlPanel

        display(ControlPanel(self.client(args.node), self))

    # ---- runtimes -----------------------------------------------------------------------

    @magic_arguments("joblet runtime")
    @argument("action", choices=["list", "info", "test", "remove", "build"])
    @argument("name", nargs="?", metavar="NAME")
    @argument("--force", action="store_true", help="build: rebuild even if it exists")
    @argument("--spec", metavar="FILE", help="build: a runtime.yml of your own")
    @argument("--file", action="append", default=[], metavar="FILE",
              help="build: a file the spec uses, e.g. setup.sh (repeatable)")
    @argument("--node", metavar="NAME")
    def _runtime(self, rest: str, cell: str | None) -> Any:
        """Runtimes: list, info NAME, test NAME, remove NAME (admin), build NAME (admin)."""
        args = parse_argstring(self._runtime, rest)
        if args.action != "list" and not args.name:
            raise UsageError(f"%joblet runtime {args.action} needs a runtime name")
        return runtime_magics.run_action(self, args)


def _run_options(args: Any) -> RunOptions:
    """The parsed options of `%%joblet run` as a `RunOptions` (kept for a --bg run's attach)."""
    return RunOptions(
        runtime=args.runtime, network=args.network, env=parse_env(args.env),
        limits=limits_from(args.max_memory, args.max_cpu, args.pids, args.timeout, args.disk,
                           args.max_io, args.gpus),
        uploads=list(args.upload), inputs=names(args.inputs), outputs=names(args.outputs),
        show=list(args.show), fetch=list(args.fetch), command=list(args.command),
        background=args.bg, allow_error=args.allow_error, node=args.node,
        status_line=not args.no_status,
    )


def _next_steps(exc: JobInterrupted) -> str:
    """What a user can do about a job a Ctrl-C left behind, in magics."""
    if exc.detached:
        return f"`%joblet attach {exc.job_id}` follows it again, `%joblet stop {exc.job_id}` stops it"
    if exc.status == "stop requested":
        return f"`%joblet status {exc.job_id}` shows how it ended"
    return ""


SUBCOMMANDS = ["_run", "_jobs", "_status", "_logs", "_attach", "_stop", "_delete", "_fetch",
               "_show", "_info", "_use", "_require", "_ui", "_runtime"]

SHORT_HELP = """joblet: run notebook cells in isolated sandboxes on a joblet agent.
  %%joblet run [options]   run the cell (options: %joblet? shows them all)
  %joblet jobs | status ID | logs ID | attach ID | stop ID | delete ID | fetch ID PATH | show ID PATH
  %joblet info | use RUNTIME [limits] | require RUNTIME | ui
  %joblet runtime list | info NAME | test NAME | remove NAME | build NAME
  %joblet session start [-r RUNTIME] [limits] | stop | status | restart | attach;  %joblet auto [off]
The agent's URL and your token come from JOBLET_URL / JOBLET_TOKEN or ~/.config/joblet/client.json."""

JobletMagics.joblet.__doc__ = SHORT_HELP + "\n\n" + "\n\n".join(
    [getattr(JobletMagics, name).__doc__ for name in SUBCOMMANDS]
    + [session_magics.session_command.__doc__, session_magics.auto_command.__doc__])

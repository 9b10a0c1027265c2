"""One-line hints for the failures a newcomer meets first, each naming the option that fixes it.

A sandboxed cell fails differently from a local one: it has no network, no files but what was sent,
none of the notebook's variables, and only the packages of its runtime. The error says what
happened; the hint says which option changes it. Pure functions over the failure's text and what
the notebook side knows (no IPython, no HTTP), so each rule is tested on its own.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|error)): (.*)$")
NO_MODULE = re.compile(r"No module named '([\w.]+)'")
NO_FILE = re.compile(r"\[Errno 2\] No such file or directory: '([^']+)'")
NOT_DEFINED = re.compile(r"name '(\w+)' is not defined")
NETWORK = re.compile(r"Temporary failure in name resolution|Name or service not known|Network is unreachable"
                     r"|No address associated with hostname|NameResolutionError|Failed to resolve"
                     r"|getaddrinfo failed|\bgaierror\b|Failed to establish a new connection", re.IGNORECASE)
# a socket call Landlock refused in a job without a network (no TCP at all there, not even on its
# own loopback); a file that is refused names its path after a colon
SOCKET_REFUSED = re.compile(r"^\[Errno 13\] Permission denied$")
OPTION_ALIASES = {"--memory": "--max-memory", "--mem": "--max-memory", "--cpu": "--max-cpu",
                  "--cpus": "--max-cpu", "--io": "--max-io", "--net": "--network", "--time": "--timeout",
                  "--input": "--in", "--output": "--out", "--file": "--upload"}
# import names whose package is called something else (the runtimes list packages)
PACKAGE_OF = {"sklearn": "scikit-learn", "cv2": "opencv-python", "PIL": "pillow", "yaml": "pyyaml",
              "bs4": "beautifulsoup4"}


@dataclass
class FailureContext:
    """What the notebook knows about the cell that failed."""

    network: str = "none"
    runtime: str | None = None
    runtimes: list[dict[str, Any]] = field(default_factory=list)   # the agent's /v1/runtimes
    earlier: dict[str, str] = field(default_factory=dict)   # name -> job id of the %%joblet cell that set it
    notebook_names: Iterable[str] = ()                      # the kernel's own variables


def last_error(text: str) -> tuple[str, str] | None:
    """(exception name, message) of the last exception line of a Python traceback."""
    for line in reversed(text.strip().splitlines()):
        match = ERROR_LINE.match(line.strip())
        if match:
            return match.group(1), match.group(2)
    return None


def hint(stderr: str, ctx: FailureContext) -> str | None:
    """The one line that points at the fix, or None where nothing specific applies."""
    error = last_error(stderr)
    if error is None:
        return None
    name, message = error
    for rule in (_module, _file, _network, _name):
        text = rule(name, message, ctx)
        if text:
            return "hint: " + text
    return None


def _module(name: str, message: str, ctx: FailureContext) -> str | None:
    match = NO_MODULE.search(message) if name.endswith("ModuleNotFoundError") else None
    if not match:
        return None
    module = match.group(1).split(".")[0]
    wanted = {module.lower(), PACKAGE_OF.get(module, module).lower()}
    having = [str(rt.get("name")) for rt in ctx.runtimes
              if wanted & {str(p).lower() for p in rt.get("packages") or []}]
    where = f"runtime {ctx.runtime}" if ctx.runtime else "the base python3"
    if having:
        return f"{module} is not in {where}; runtime {', '.join(having)} has it: -r {having[0]}"
    return (f"{module} is not in {where}, nor in any runtime on this agent "
            f"(`%joblet runtime list`); an admin can build one that has it")


def _file(name: str, message: str, ctx: FailureContext) -> str | None:
    match = NO_FILE.search(message) if name in ("FileNotFoundError", "OSError", "IOError") else None
    if not match:
        return None
    path = match.group(1)
    if path.startswith("/"):
        return (f"the sandbox sees only its own files; send a notebook file with --upload "
                f"{path}:{path.rsplit('/', 1)[-1]} and open it by that name in /work")
    return f"the sandbox's /work has only the files you send: --upload {path}"


def _network(name: str, message: str, ctx: FailureContext) -> str | None:
    refused = name == "PermissionError" and SOCKET_REFUSED.match(message)
    if ctx.network not in ("", "none") or not (NETWORK.search(message) or NETWORK.search(name) or refused):
        return None
    return "this job has no network; --network bridge gives it one"


def _name(name: str, message: str, ctx: FailureContext) -> str | None:
    match = NOT_DEFINED.search(message) if name == "NameError" else None
    if not match:
        return None
    var = match.group(1)
    if var in ctx.earlier:
        return (f"{var} was set by an earlier %%joblet cell (job {ctx.earlier[var]}), and each job "
                f"starts afresh: --out {var} there and --in {var} here bring it across, or keep "
                f"variables in a session (%joblet session start, then %%joblet run --session)")
    if var in set(ctx.notebook_names):
        return f"{var} is a variable of this notebook, not of the sandbox: --in {var} sends it"
    return None


def suggest_option(unknown: str, known: Iterable[str]) -> str | None:
    """The option meant by an unrecognised one (`--memory` -> `--max-memory`)."""
    flag = unknown.split("=", 1)[0]
    options = [k for k in known if k.startswith("-")]
    if flag in OPTION_ALIASES and OPTION_ALIASES[flag] in options:
        return OPTION_ALIASES[flag]
    close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
    if close:
        return close[0]
    longer = [k for k in options if k.startswith("--") and flag.lstrip("-") in k]
    return longer[0] if len(longer) == 1 else None

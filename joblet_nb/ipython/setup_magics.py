"""`%joblet info`, `use` and `require`: what a notebook declares it needs, and who it is to the agent.

A shared notebook's first cell says which runtime and limits its cells run with and fails clearly
(or skips, with `--or-skip`) where the agent lacks a runtime; `info` shows what is in effect. The
magics parse the arguments; these functions act on the magics' settings through `Host`.
"""

from __future__ import annotations

from typing import Any, Protocol

from IPython.display import display

from ..core.account import describe
from ..core.client import JobletClient
from ..core.config import Settings, mask
from ..core.errors import JobletError, RuntimeMissing
from ..core.records import RuntimeInfo, to_json
from ..core.request import effective_runtime, limits_from
from .display import mapping_table, note


class Host(Protocol):
    """What these commands read and set on the magics that run them."""

    http_timeout: float
    default_runtime: str
    default_limits: dict[str, Any]
    default_network: str
    skip_runtimes: set[str]

    def settings(self, node: str | None = None) -> Settings: ...

    def client(self, node: str | None = None) -> JobletClient: ...


def info(host: Host, args: Any) -> None:
    """The agent, who you are to it (tokens masked), and this notebook's defaults, as a table."""
    settings = host.settings(args.node)
    client = JobletClient.from_settings(settings, timeout=host.http_timeout)
    facts: dict[str, Any] = {"url": client.url}
    if client.cert:
        facts["pinned certificate"] = client.cert
    facts.update({f"agent {k}": v for k, v in to_json(client.health()).items()})
    facts["token"] = f"{mask(client.token)} (from {settings.source})"
    try:
        facts.update(describe(to_json(client.whoami())))
    except JobletError as exc:
        facts["you are"] = f"not accepted: {exc}"
    facts["admin token"] = mask(client.admin_token)
    facts["default runtime"] = host.default_runtime or "base python3"
    facts["default limits"] = dict(host.default_limits) or "agent defaults"
    facts["default network"] = host.default_network or "agent default (none)"
    display(mapping_table(facts, "joblet info"))


def use(host: Host, args: Any) -> None:
    """Set the notebook's runtime, limits and network; a missing runtime fails or falls back."""
    runtime = effective_runtime(args.runtime)
    if runtime and not args.no_check:
        try:
            check_runtime(host.client(args.node), runtime)
        except RuntimeMissing as exc:
            if args.fallback is None:
                raise
            fallback = effective_runtime(args.fallback)
            if fallback:
                check_runtime(host.client(args.node), fallback)
            note(f"{exc.message}; using {fallback or 'base python3'} instead")
            runtime = fallback
    limits = to_json(limits_from(args.max_memory, args.max_cpu, args.pids, args.timeout,
                                 args.disk, args.max_io, args.gpus))
    host.default_runtime = runtime or ""
    host.default_limits = limits
    host.default_network = args.network or ""
    shown = ", ".join(f"{k}={v}" for k, v in sorted(limits.items())) or "agent defaults"
    note(f"this notebook runs with runtime={runtime or 'base python3'}, limits: {shown}"
         + (f", network={args.network}" if args.network else ""))


def require(host: Host, args: Any) -> None:
    """Each runtime is on the agent, or the cell fails (or, with --or-skip, its cells are skipped)."""
    client = host.client(args.node)
    for name in args.runtimes:
        try:
            check_runtime(client, name)
            host.skip_runtimes.discard(name)
            note(f"runtime {name} is available")
        except RuntimeMissing as exc:
            if not args.or_skip:
                raise
            host.skip_runtimes.add(name)
            note(f"{exc.message}; cells that use it are skipped")


def check_runtime(client: JobletClient, name: str) -> RuntimeInfo:
    """The runtime's record, or RuntimeMissing that says how an admin builds it."""
    try:
        return client.require_runtime(name)
    except RuntimeMissing as exc:
        raise exc.built_with(f"`%joblet runtime build {name}` (or POST /v1/runtimes/{name}/build)") from None

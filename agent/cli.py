"""`joblet-agent serve` and `joblet-agent token create`, as API.md specifies them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from . import __version__
from .auth import ROLES, TokenStore
from .config import AgentConfig, load_config
from .errors import CannotIsolate
from .paths import AgentPaths

DEFAULT_ROOT = "/opt/joblet"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="joblet-agent", description="joblet-nb host agent")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the agent")
    serve.add_argument("--root", default=DEFAULT_ROOT, help="agent root (default %(default)s)")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:7755)")
    where.add_argument("--unix", help="listen on a unix socket at PATH instead (mode 0660)")
    serve.add_argument("--config", help="config file (default ROOT/config/agent.yml)")

    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="print a new token (stored hashed)")
    create.add_argument("--root", default=DEFAULT_ROOT)
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--name")

    args = parser.parse_args(argv)
    try:
        if args.command == "token":
            paths = AgentPaths.at(args.root)
            paths.ensure()
            print(TokenStore(paths.tokens).create(args.role, args.name))
            return 0
        return _serve(args)
    except CannotIsolate as exc:
        print(f"joblet-agent: {exc}", file=sys.stderr)
        return 2


def _listen_address(args: argparse.Namespace, config: AgentConfig) -> tuple[str, int, bool]:
    """(host, port, loopback); beyond loopback only when the config file names the address."""
    text = args.listen or config.listen
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise CannotIsolate(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:7755")
    host = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and text != config.listen:
        raise CannotIsolate(f"refusing to listen on {text}: only loopback unless the config file sets "
                            f"'listen: {text}' explicitly")
    return host, int(port), loopback


def _unix_listener(path: str) -> socket.socket:
    """Bound before uvicorn starts, with mode 0660 from the first moment (no chmod race)."""
    if os.path.exists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from fastapi import FastAPI

    from . import client_config, preflight
    from .jobs import etcfiles
    from .api.app import create_app
    from .jobs.service import JobService
    from .jobs.launcher_client import Launcher
    from .network.bridge import NetworkManager
    from .builds.published import PublishedRuntimes
    from .builds.service import RuntimeService
    from .sandbox import cgroups
    from .jobs.sweep import sweep

    paths = AgentPaths.at(args.root)
    driver = preflight.check(paths.cgroup_parent())
    config = load_config(Path(args.config) if args.config else paths.config / "agent.yml")
    host, port, loopback = ("", 0, True) if args.unix else _listen_address(args, config)
    tls_files = None
    if not args.unix and (config.tls or not loopback):
        from .api.tls import ensure_certificate

        tls_files = ensure_certificate(paths.config, host)
    paths.ensure()
    launcher = Launcher(paths.cgroup_parent())
    tokens = TokenStore(paths.tokens)
    published = PublishedRuntimes(paths)
    network = NetworkManager(paths, config.network)  # threads start on first use, after the fork
    etcfiles.use_nameservers(config.network.dns)
    service = JobService(paths, config, driver, launcher, published.resolve, network=network)
    runtimes = RuntimeService(paths, published, service, extra_private=[str(client_config.client_dir())]
                              + ([os.path.realpath(args.config)] if args.config else []))
    for name, verdict in runtimes.start().items():  # full verification of every published runtime
        if verdict != "verified":
            print(f"joblet-agent: runtime {name} is refused: {verdict}", file=sys.stderr)
    try:
        driver.limit_parent(cgroups.CgroupLimits(cpu_percent=config.agent_limits.cpu_percent,
                                           memory_mb=config.agent_limits.memory_mb, pids=config.agent_limits.pids))
    except cgroups.CgroupError as exc:
        raise CannotIsolate(f"cannot limit the agent's cgroup {driver.parent}: {exc}") from None
    counts = sweep(paths, driver, service.store, network)
    if any(counts.values()):
        print(f"joblet-agent: start-up sweep removed {counts}", file=sys.stderr)
    launcher.start()  # after the sweep: its stages make cgroups under the parent the sweep empties
    scheme = "https" if tls_files else "http"
    url = f"unix:{args.unix}" if args.unix else f"{scheme}://{host}:{port}"
    written = client_config.write_if_absent(tokens, url, cert=tls_files[0] if tls_files else None)
    if written:
        print(f"joblet-agent: wrote client config {written} (and admin-token beside it)", file=sys.stderr)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await service.shutdown()
        await asyncio.to_thread(network.close)  # bridge and table go
        launcher.stop()
        for name in driver.leftovers():  # cgroups of stages that were still waiting for a job
            driver.open(name).remove()
        driver.remove_parent()

    app = create_app(service, tokens, runtimes)
    app.router.lifespan_context = lifespan
    print(f"joblet-agent {__version__}: root {paths.root}, cgroup {driver.version}, listening on {url}",
          file=sys.stderr, flush=True)
    if args.unix:
        listener = _unix_listener(args.unix)  # kept referenced: uvicorn only gets its descriptor
        uvicorn.run(app, fd=listener.fileno(), log_level="warning", timeout_graceful_shutdown=5)
    else:
        ssl = {"ssl_certfile": str(tls_files[0]), "ssl_keyfile": str(tls_files[1])} if tls_files else {}
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5, **ssl)
    return 0


if __name__ == "__main__":
    sys.exit(main())

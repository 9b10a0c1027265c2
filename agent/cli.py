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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .auth import ROLES, Authenticator, TokenStore
from .config import AgentConfig, load_config
from .errors import CannotIsolate
from .paths import AgentPaths

if TYPE_CHECKING:  # the token command imports none of the service stack
    from .builds.service import RuntimeService
    from .cluster.launcher_client import Launcher
    from .jobs.service import JobService
    from .network.bridge import NetworkManager
    from .sessions.service import SessionService
    from .sandbox.cgroups import CgroupDriver

DEFAULT_ROOT = "/opt/joblet"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="joblet-agent", description="joblet-nb host agent")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the agent")
    serve.add_argument("--root", default=DEFAULT_ROOT, help="agent root (default %(default)s)")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:7755)")
    where.add_argument("--unix", help="listen on a unix socket at PATH instead (mode 0660)")
    serve.add_argument("--config", help="config file (default ROOT/config/agent.yml)")
    serve.add_argument("--stop-jobs", action="store_true",
                       help="on SIGTERM, stop every running job and session too (default: leave them "
                            "running; the next agent on this root adopts them)")

    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="print a new token (stored hashed)")
    create.add_argument("--root", default=DEFAULT_ROOT)
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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


@dataclass
class Agent:
    """The composed agent: what `serve` starts, and stops again at shutdown."""

    paths: AgentPaths
    config: AgentConfig
    driver: CgroupDriver
    launcher: Launcher
    tokens: TokenStore
    network: NetworkManager
    jobs: JobService
    runtimes: RuntimeService
    sessions: SessionService


def _compose(args: argparse.Namespace, paths: AgentPaths, config: AgentConfig, driver: CgroupDriver) -> Agent:
    """The one place the services meet: each gets what it uses, nothing refers back up."""
    from . import client_config
    from .builds.published import PublishedRuntimes
    from .builds.service import RuntimeService
    from .jobs import etcfiles
    from .cluster.launcher_client import Launcher
    from .jobs.service import JobService
    from .network.bridge import NetworkManager
    from .sessions import frames
    from .sessions.service import SessionService

    launcher = Launcher(paths.cgroup_parent(), job_nofile=args.job_nofile, translators=[frames.__name__],
                        socket_dir=paths.stage_sockets())
    published = PublishedRuntimes(paths)
    network = NetworkManager(paths, config.network, etcfiles.nameservers)  # threads start on first use
    etcfiles.use_nameservers(config.network.dns)
    cluster = None
    if config.executor == "slurm":
        from .cluster.compose import slurm_executor

        cluster = slurm_executor(paths, config)
    jobs = JobService(paths, config, driver, launcher, published.resolve, network=network, cluster=cluster)
    runtimes = RuntimeService(paths, published, jobs, extra_private=[str(client_config.client_dir())]
                              + ([os.path.realpath(args.config)] if args.config else []))
    if config.base == "minimal":
        from .builds.base import BaseImage

        jobs.base = BaseImage(runtimes)
    sessions = SessionService(jobs, config, paths.state, jobs.audit)
    return Agent(paths, config, driver, launcher, TokenStore(paths.tokens), network, jobs, runtimes, sessions)


def _start(agent: Agent) -> None:
    """Check the on-disk format, bound the agent's cgroup, take back the jobs and sessions an
    earlier life left running (and end those that ended meanwhile), sweep what no live job holds,
    verify the published runtimes (after the adoption: a runtime a live job uses is never
    collected), then start the launcher (after the sweep: its stages make cgroups under the parent
    it empties)."""
    from .jobs.restore import Restorer, check_format, write_format
    from .jobs.sweep import sweep
    from .sandbox.cgroups import CgroupError, CgroupLimits

    found = check_format(agent.paths)
    limits = agent.config.agent_limits
    try:
        agent.driver.limit_parent(CgroupLimits(cpu_percent=limits.cpu_percent, memory_mb=limits.memory_mb,
                                               pids=limits.pids))
    except CgroupError as exc:
        raise CannotIsolate(f"cannot limit the agent's cgroup {agent.driver.parent}: {exc}") from None
    report = Restorer(agent.jobs, found).run()
    report.merge(agent.sessions.load())  # sessions ride on holders too
    if report.adopted or report.ended:
        print(f"joblet-agent: re-adopted {len(report.adopted)} running jobs and sessions in {report.seconds:.3f} s; "
              f"{len(report.ended)} ended while no agent ran", file=sys.stderr, flush=True)
    for sandbox_id, problem in report.refused.items():
        print(f"joblet-agent: {sandbox_id} not adopted: {problem}", file=sys.stderr, flush=True)
    live = agent.jobs.live
    counts = sweep(agent.paths, agent.driver, frozenset(live), agent.network,
                   frozenset(i for i, sandbox in live.items() if sandbox.record.network != "none"))
    if any(counts.values()):
        print(f"joblet-agent: start-up sweep removed {counts}", file=sys.stderr)
    for name, verdict in agent.runtimes.start().items():  # full verification of every published runtime
        if verdict != "verified":
            print(f"joblet-agent: runtime {name} is refused: {verdict}", file=sys.stderr)
    write_format(agent.paths)
    agent.launcher.start()


async def _stop(agent: Agent, stop_jobs: bool) -> None:
    """Without `stop_jobs`, jobs and sessions on this host stay with their holders (and bridge
    jobs keep the bridge and its rules); everything else the agent made goes."""
    await agent.sessions.shutdown(stop_jobs)
    left = await agent.jobs.shutdown(stop_jobs)
    if agent.jobs.cluster is not None:
        await agent.jobs.cluster.close()
    if any(network != "none" for network in left.values()):
        await asyncio.to_thread(agent.network.detach)
    else:
        await asyncio.to_thread(agent.network.close)  # bridge and table go
    agent.launcher.stop()
    for name in agent.driver.leftovers():  # cgroups of stages that were still waiting for a job
        if name.removeprefix("job-") not in left:
            agent.driver.open(name).remove()
    agent.driver.remove_parent()  # only once no job cgroup is left


def _authenticator(tokens: TokenStore, config: AgentConfig) -> Authenticator:
    """Local tokens, and the hub's tokens where the config names a hub (its service token comes
    from JUPYTERHUB_API_TOKEN, as JupyterHub gives it to its services)."""
    if config.jupyterhub is None:
        return Authenticator(tokens)
    from .hub import HubIdentity

    hub = HubIdentity(config.jupyterhub, os.environ.get("JUPYTERHUB_API_TOKEN") or None)
    print(f"joblet-agent: accepting JupyterHub tokens from {config.jupyterhub.api_url} as service "
          f"{config.jupyterhub.service_name}", file=sys.stderr)
    return Authenticator(tokens, hub.authenticate)


def _serve(args: argparse.Namespace) -> int:
    from fastapi import FastAPI

    from . import client_config, fdlimit
    from .api import server
    from .api.app import create_app
    from .sandbox import preflight

    args.job_nofile, _ = fdlimit.raise_soft_limit()  # jobs keep the limit the agent was given
    paths = AgentPaths.at(args.root)
    driver = preflight.check(paths.cgroup_parent())
    config = load_config(Path(args.config) if args.config else paths.config / "agent.yml")
    host, port, loopback = ("", 0, True) if args.unix else _listen_address(args, config)
    tls_files = None
    if not args.unix and (config.tls or not loopback):
        from .api.tls import ensure_certificate

        tls_files = ensure_certificate(paths.config, host)
    paths.ensure()
    agent = _compose(args, paths, config, driver)
    _start(agent)
    url = f"unix:{args.unix}" if args.unix else f"{'https' if tls_files else 'http'}://{host}:{port}"
    written = client_config.write_if_absent(agent.tokens, url, cert=tls_files[0] if tls_files else None)
    if written:
        print(f"joblet-agent: wrote client config {written} (and admin-token beside it)", file=sys.stderr)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from .builds.base import BaseImage
        from .jobs.retention import keep_pruning

        asyncio.get_running_loop().set_exception_handler(fdlimit.quiet_exception_handler)
        agent.jobs.resume()  # the adopted holders, on the event loop from now on
        if isinstance(agent.jobs.base, BaseImage):
            await agent.jobs.base.prepare()  # builds the base image if none is verified
        pruning = asyncio.create_task(keep_pruning(agent.jobs))
        yield
        pruning.cancel()
        await _stop(agent, args.stop_jobs)

    app = create_app(agent.jobs, _authenticator(agent.tokens, agent.config), agent.runtimes, agent.sessions)
    app.router.lifespan_context = lifespan
    print(f"joblet-agent {__version__}: root {paths.root}, cgroup {driver.version}, listening on {url}",
          file=sys.stderr, flush=True)
    if args.unix:
        listener = _unix_listener(args.unix)  # kept referenced: uvicorn only gets its descriptor
        server.run(app, config.api, fd=listener.fileno())
    else:
        ssl = {"ssl_certfile": str(tls_files[0]), "ssl_keyfile": str(tls_files[1])} if tls_files else {}
        server.run(app, config.api, host=host, port=port, **ssl)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the agent's URL and the tokens come from.

Order (API.md: the environment before any config file):
1. what the caller set explicitly (`url`, `token_file`, ...; a named node's own settings);
2. `JOBLET_URL`, `JOBLET_TOKEN`, `JOBLET_ADMIN_TOKEN`, `JOBLET_CERT`;
3. in a single-user server that JupyterHub spawned (`JUPYTERHUB_API_TOKEN` and `JUPYTERHUB_API_URL`
   in the environment) and no `JOBLET_TOKEN` or token file: that hub token, for the agent at
   `JOBLET_URL` or at the URL of the hub's joblet service (hub.py);
4. the client config the agent writes on its first start:
   `~/.config/joblet/client.json` = `{"url": ..., "token": ..., "cert": ...}` and
   `~/.config/joblet/admin-token`. `cert` (HTTPS agents only) is the agent's own certificate,
   which the client pins: it trusts exactly that certificate, not the system store.
Tokens are only ever read from files or the environment, never passed as arguments: in a
notebook those end up in the file and its history.

A token (and a certificate) from those files belongs to the agent they were written for: the URL in
`client.json` beside them (the default local URL if there is none). With `JOBLET_URL` pointing at
another agent they are not sent there; a token for another agent has to be given for it
(`JOBLET_TOKEN`, `JOBLET_ADMIN_TOKEN`, a token file). Every token carries where it came from, so
that an authentication error can say which one the agent refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from .hub import HubEnv, agent_url, hub_env

DEFAULT_URL = "http://127.0.0.1:7755"
CLIENT_FILE = "client.json"
ADMIN_TOKEN_FILE = "admin-token"


@dataclass(frozen=True)
class Settings:
    """A resolved connection: where the agent is, and who we are to it."""

    url: str
    token: str | None
    admin_token: str | None
    source: str  # where the token came from, to show the user and in auth errors
    cert: str | None = None  # the pinned certificate of an HTTPS agent
    admin_source: str = "none"  # where the admin token came from


class UnknownNode(LookupError):
    """A node name that the configured nodes do not hold."""

    def __init__(self, node: str, known: list[str]):
        self.node, self.known = node, known
        super().__init__(f"unknown node {node!r} ({', '.join(known) or 'none configured'})")


def config_dirs() -> list[Path]:
    """Candidate folders of the client config: `$XDG_CONFIG_HOME/joblet`, then `~/.config/joblet`."""
    dirs: list[Path] = []
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        dirs.append(Path(xdg) / "joblet")
    home = Path(os.path.expanduser("~")) / ".config" / "joblet"
    if home not in dirs:
        dirs.append(home)
    return dirs


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The first non-empty line of a token file; a clear error when it is missing."""
    p = Path(os.path.expanduser(str(path)))
    try:
        text = p.read_text()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read token file {p}: {exc.strerror}") from None
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    raise ValueError(f"token file {p} is empty")


def _client_file() -> tuple[dict, Path | None]:
    for d in config_dirs():
        f = d / CLIENT_FILE
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                return data, f
    return {}, None


def _admin_file() -> tuple[str | None, Path | None, str]:
    """The admin token file, and the URL of the agent it belongs to (client.json beside it)."""
    for d in config_dirs():
        f = d / ADMIN_TOKEN_FILE
        if f.is_file():
            try:
                token = read_token_file(f)
            except (OSError, ValueError):
                continue
            try:
                url = json.loads((d / CLIENT_FILE).read_text()).get("url") or DEFAULT_URL
            except (OSError, ValueError, AttributeError):
                url = DEFAULT_URL
            return token, f, str(url)
    return None, None, DEFAULT_URL


def same_agent(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def resolve(
    url: str = "",
    token_file: str = "",
    admin_token_file: str = "",
    cert_file: str = "",
) -> Settings:
    """Resolve URL and tokens; explicit arguments win, then the environment, then the files."""
    env = os.environ
    hub = hub_env(env)
    if hub is not None and not token_file and not env.get("JOBLET_TOKEN"):
        return _resolve_hub(hub, url, admin_token_file, cert_file)
    data, client_path = _client_file()

    resolved_url = url or env.get("JOBLET_URL") or data.get("url") or DEFAULT_URL

    file_url = str(data.get("url") or DEFAULT_URL)
    if token_file:
        token, source = read_token_file(token_file), f"token_file {token_file}"
    elif env.get("JOBLET_TOKEN"):
        token, source = env["JOBLET_TOKEN"].strip(), "JOBLET_TOKEN"
    elif data.get("token") and same_agent(resolved_url, file_url):
        token, source = str(data["token"]).strip(), str(client_path)
    elif data.get("token"):
        token, source = None, f"none ({client_path} holds a token for {file_url}, not for {resolved_url})"
    else:
        token, source = None, "none"

    admin_source = "none"
    if admin_token_file:
        admin: str | None = read_token_file(admin_token_file)
        admin_source = f"admin_token_file {admin_token_file}"
    elif env.get("JOBLET_ADMIN_TOKEN"):
        admin, admin_source = env["JOBLET_ADMIN_TOKEN"].strip(), "JOBLET_ADMIN_TOKEN"
    else:
        admin, admin_path, admin_url = _admin_file()
        if admin is not None and not same_agent(resolved_url, admin_url):
            admin, admin_source = None, f"none ({admin_path} is for {admin_url}, not for {resolved_url})"
        elif admin is not None:
            admin_source = str(admin_path)

    cert = cert_file or env.get("JOBLET_CERT") or data.get("cert") or None
    # A certificate from client.json belongs to the agent that file names, not to another URL.
    if cert and not (cert_file or env.get("JOBLET_CERT")) and not same_agent(resolved_url, file_url):
        cert = None
    return Settings(url=resolved_url.rstrip("/"), token=token, admin_token=admin, source=source,
                    cert=os.path.expanduser(cert) if cert else None, admin_source=admin_source)


def _resolve_hub(hub: HubEnv, url: str, admin_token_file: str, cert_file: str) -> Settings:
    """The hub's token for every call (the agent asks the hub who it is and what role it has);
    the client config of the machine is not read: it belongs to whoever runs an agent here."""
    env = os.environ
    resolved_url = url or env.get("JOBLET_URL") or agent_url(hub)
    admin = read_token_file(admin_token_file) if admin_token_file else \
        env.get("JOBLET_ADMIN_TOKEN", "").strip() or hub.token
    admin_source = (f"admin_token_file {admin_token_file}" if admin_token_file else
                    "JOBLET_ADMIN_TOKEN" if env.get("JOBLET_ADMIN_TOKEN", "").strip() else
                    "JupyterHub: this server's JUPYTERHUB_API_TOKEN")
    cert = cert_file or env.get("JOBLET_CERT") or None
    return Settings(url=resolved_url.rstrip("/"), token=hub.token, admin_token=admin,
                    source="JupyterHub: this server's JUPYTERHUB_API_TOKEN",
                    cert=os.path.expanduser(cert) if cert else None, admin_source=admin_source)


def mask(token: str | None) -> str:
    """Show enough of a token to tell two apart, never enough to use it."""
    if not token:
        return "(none)"
    if len(token) <= 8:
        return "*" * len(token)
    return f"{token[:3]}…{token[-4:]}"


def resolve_node(nodes: Mapping[str, Any], node: str | None, url: str = "", token_file: str = "",
                 admin_token_file: str = "", cert_file: str = "") -> Settings:
    """The settings of a named agent: `nodes[node]` is a URL or a dict of `url`, `token_file`,
    `admin_token_file`, `cert_file`; what it leaves out comes from the other arguments, as
    without a node."""
    if node:
        spec = nodes.get(node)
        if spec is None:
            raise UnknownNode(node, sorted(nodes))
        if isinstance(spec, str):
            spec = {"url": spec}
        url = spec.get("url", url)
        token_file = spec.get("token_file", token_file)
        admin_token_file = spec.get("admin_token_file", admin_token_file)
        cert_file = spec.get("cert_file", cert_file)
    settings = resolve(url, token_file, admin_token_file, cert_file)
    return replace(settings, source=f"node {node}") if node else settings

"""Inside a single-user server that JupyterHub spawned: the user's hub token and the agent the hub
advertises, so that `%load_ext joblet_nb` needs no file and no secret in a cell.

The spawner puts `JUPYTERHUB_API_TOKEN` (this server's token, which the agent checks with the hub),
`JUPYTERHUB_API_URL` and `JUPYTERHUB_USER` in the server's environment, and kernels inherit it.
The agent is `JOBLET_URL` if set, else the URL of the hub service named `JOBLET_HUB_SERVICE`
(default: a service named `joblet`, or one whose `info` has `"joblet": true`), from
`GET {hub api}/services` (the server's token needs `list:services` and `read:services` on it:
README "Running behind JupyterHub").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from .errors import AgentUnavailable

SERVICE_ENV = "JOBLET_HUB_SERVICE"
DEFAULT_SERVICE = "joblet"
_found: dict[tuple[str, str, str], str] = {}  # (hub api, token, service) -> agent URL
_lock = threading.Lock()


class HubDiscoveryError(AgentUnavailable):
    """The hub did not say where the agent is."""


@dataclass(frozen=True)
class HubEnv:
    api_url: str
    token: str
    user: str | None


def hub_env(env: Mapping[str, str] | None = None) -> HubEnv | None:
    """The hub's API and this server's token, where JupyterHub spawned this server."""
    env = os.environ if env is None else env
    token, api = env.get("JUPYTERHUB_API_TOKEN", "").strip(), env.get("JUPYTERHUB_API_URL", "").strip()
    if not token or not api:
        return None
    return HubEnv(api.rstrip("/"), token, env.get("JUPYTERHUB_USER") or None)


def agent_url(hub: HubEnv, service: str | None = None, timeout: float = 10.0) -> str:
    """The URL of the agent's hub service (asked once per kernel, then remembered)."""
    wanted = service or os.environ.get(SERVICE_ENV, "").strip()
    key = (hub.api_url, hub.token, wanted)
    with _lock:
        if key in _found:
            return _found[key]
    url = _pick(_services(hub, timeout), wanted)
    with _lock:
        _found[key] = url
    return url


def _services(hub: HubEnv, timeout: float) -> list[dict[str, Any]]:
    try:
        resp = requests.get(hub.api_url + "/services", headers={"Authorization": f"token {hub.token}"},
                            timeout=timeout)
    except requests.RequestException as exc:
        raise HubDiscoveryError(f"JupyterHub at {hub.api_url} is not answering ({type(exc).__name__}), so "
                                "the joblet agent cannot be found; set JOBLET_URL, or retry") from None
    if resp.status_code == 403:
        raise HubDiscoveryError("JupyterHub does not list its services to this server's token: the hub's "
                                "admin adds list:services and read:services for the joblet service to the "
                                "'server' role (README: Running behind JupyterHub), or sets JOBLET_URL")
    if resp.status_code != 200:
        raise HubDiscoveryError(f"JupyterHub at {hub.api_url} answered {resp.status_code} to GET /services; "
                                "set JOBLET_URL to the agent's URL")
    data = resp.json()
    items = data.values() if isinstance(data, dict) else data if isinstance(data, list) else []
    return [s for s in items if isinstance(s, dict)]


def _pick(services: list[dict[str, Any]], wanted: str) -> str:
    def is_agent(s: dict[str, Any]) -> bool:
        if wanted:
            return s.get("name") == wanted
        info = s.get("info") if isinstance(s.get("info"), dict) else {}
        return s.get("name") == DEFAULT_SERVICE or info.get("joblet") is True

    for service in services:
        if is_agent(service):
            if not service.get("url"):
                raise HubDiscoveryError(f"the hub service {service.get('name')!r} has no URL this server may "
                                        "read (the 'server' role needs read:services on it), or set JOBLET_URL")
            return str(service["url"]).rstrip("/")
    names = ", ".join(sorted(str(s.get("name")) for s in services)) or "none visible to this server"
    raise HubDiscoveryError(f"JupyterHub lists no joblet agent service (named {wanted or DEFAULT_SERVICE!r}; "
                            f"services: {names}); set JOBLET_URL or {SERVICE_ENV}")

"""JupyterHub as an identity provider: whose is this token, and what may they do here.

The agent asks the hub `GET {api_url}/user` with the caller's token (any hub token may identify
itself: name, admin flag and groups come back), and keeps the answer `cache_s` seconds, so a token
the hub revoked stops working within that time. Only answers that name a user are kept, under the
token's SHA-256 (never the token), in an LRU of `cache_entries`: junk tokens cannot grow it, and a
failed lookup is never remembered. A hub that does not answer within `timeout_s` is a 503 that says
so; the request does not hang.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from .auth import Principal
from .errors import Unauthorized, Unavailable
from .hubconfig import HubConfig
from .policy import for_hub_user

OWNER_PREFIX = "hub:"  # local token ids are 8 hex digits: the two can never collide


@dataclass(frozen=True)
class HubUser:
    name: str
    admin: bool
    groups: tuple[str, ...]
    scopes: frozenset[str]


class HubIdentity:
    def __init__(self, config: HubConfig, service_token: str | None) -> None:
        self.config = config
        self.service_token = service_token
        self._cache: OrderedDict[str, tuple[float, HubUser]] = OrderedDict()
        self._lock = threading.Lock()

    # ---- the one call the API makes ------------------------------------------------------

    def authenticate(self, token: str) -> Principal:
        """The hub user of `token` as a Principal: owner `hub:<name>`, role admin for hub admins
        and members of `admin_group`, and the user's limits and quotas."""
        user = self.lookup(token)
        if self.config.require_access_scope and not self._may_access(user):
            raise Unauthorized(f"this JupyterHub token does not carry access:services!service="
                               f"{self.config.service_name}; grant that scope to the user and server "
                               f"roles in the hub's config (README: Running behind JupyterHub)")
        admin = user.admin or (self.config.admin_group is not None and self.config.admin_group in user.groups)
        return Principal(OWNER_PREFIX + user.name, user.name, "admin" if admin else "user",
                         identity="jupyterhub", groups=user.groups,
                         policy=for_hub_user(self.config, user.name, list(user.groups)))

    def lookup(self, token: str) -> HubUser:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                self._cache.move_to_end(key)
                return hit[1]
            self._cache.pop(key, None)
        user = self._ask(token)
        if self.config.cache_s > 0:
            with self._lock:
                self._cache[key] = (now + self.config.cache_s, user)
                while len(self._cache) > self.config.cache_entries:
                    self._cache.popitem(last=False)
        return user

    def cached(self) -> int:
        with self._lock:
            return len(self._cache)

    # ---- talking to the hub --------------------------------------------------------------

    def _ask(self, token: str) -> HubUser:
        resp = self._get("/user", token)
        if resp.status_code in (401, 403):
            raise Unauthorized("JupyterHub does not know this token (revoked, expired, or its user "
                               "logged out); log in to the hub again, or use an agent token")
        model = self._json(resp, "/user")
        if model.get("kind", "user") != "user" or not isinstance(model.get("name"), str):
            raise Unauthorized(f"this JupyterHub token belongs to a {model.get('kind', 'non-user')}, "
                               "not a user; send a user's token")
        groups = model.get("groups")
        if not isinstance(groups, list):  # a hub that hides groups from the user's own token
            groups = self._groups_of(model["name"])
        scopes = model.get("scopes")
        return HubUser(model["name"], model.get("admin") is True, tuple(str(g) for g in groups),
                       frozenset(str(s) for s in scopes) if isinstance(scopes, list) else frozenset())

    def _groups_of(self, name: str) -> list[Any]:
        """Group membership asked with the service's own token (it needs read:users:groups). Where
        groups decide roles or limits, a user whose groups cannot be learnt is refused rather than
        let in as if in no group (which would lift a students group's maximum)."""
        if self.config.admin_group is None and not self.config.groups:
            return []
        if not self.service_token:
            raise Unavailable(f"JupyterHub did not say which groups {name} is in, and the agent has no "
                              "service token to ask it: start the agent with the service's token in "
                              "JUPYTERHUB_API_TOKEN (README: Running behind JupyterHub)")
        resp = self._get(f"/users/{quote(name, safe='')}", self.service_token)
        model = self._json(resp, "/users/{name}") if resp.status_code == 200 else {}
        groups = model.get("groups")
        if not isinstance(groups, list):
            raise Unavailable(f"JupyterHub does not show {name}'s groups to the agent's service token "
                              f"(HTTP {resp.status_code}): give the service the read:users:groups scope "
                              "(README: Running behind JupyterHub)")
        return groups

    def _get(self, path: str, token: str) -> requests.Response:
        url = self.config.api_url + path
        try:
            return requests.get(url, headers={"Authorization": f"token {token}"},
                                timeout=(self.config.timeout_s, self.config.timeout_s),
                                verify=self.config.ca_file or True, allow_redirects=False)
        except requests.exceptions.Timeout:
            why = f"did not answer within {self.config.timeout_s:g} s"
        except requests.exceptions.RequestException as exc:
            why = f"cannot be reached ({_reason(exc)})"
        raise Unavailable(f"JupyterHub at {self.config.api_url} is not answering: it {why}. Hub tokens "
                          "cannot be checked until it is back; local agent tokens still work")

    def _json(self, resp: requests.Response, what: str) -> Mapping[str, Any]:
        if resp.status_code != 200:
            raise Unavailable(f"JupyterHub at {self.config.api_url} answered {resp.status_code} to "
                              f"GET {what}; check jupyterhub.api_url in the agent's config")
        try:
            model = resp.json()
        except ValueError:
            model = None
        if not isinstance(model, dict):
            raise Unavailable(f"JupyterHub at {self.config.api_url} gave no user model for GET {what}; "
                              "check jupyterhub.api_url in the agent's config")
        return model

    def _may_access(self, user: HubUser) -> bool:
        return bool({"access:services", f"access:services!service={self.config.service_name}"} & user.scopes)


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host",
                   "Connection reset", "certificate verify failed"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__

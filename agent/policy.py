"""What one hub user may ask for and hold: the `jupyterhub:` rules of the config, resolved for a
user and their groups. Pure data and checks; the services count what a user holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import BadRequest, Conflict
from .hubconfig import LIMIT_NAMES, QUOTA_NAMES, HubConfig, Rules

UNLIMITED_ZERO = ("io_bps",)  # limits where 0 means "no limit"


@dataclass(frozen=True)
class Policy:
    """Per limit, the most a job may ask for (`caps`) and per quota, how much a user may hold,
    each with where it comes from ("group students", "user alice", "jupyterhub.quotas")."""

    caps: dict[str, float] = field(default_factory=dict)
    caps_from: dict[str, str] = field(default_factory=dict)
    quotas: dict[str, int] = field(default_factory=dict)
    quotas_from: dict[str, str] = field(default_factory=dict)

    def clamp(self, asked: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
        """`chosen` (asked or the agent's default) under the caps. An ask above a cap is refused
        naming who set it; a default above it (or unlimited) quietly becomes the cap."""
        out = dict(chosen)
        for name, cap in self.caps.items():
            ask = asked.get(name)
            if ask is not None and (_unlimited(name, ask) or ask > cap):
                raise BadRequest(f"limits.{name}: {ask:g} is above {cap:g}, the most "
                                 f"{self.caps_from[name]} may ask for ({_where(self.caps_from[name])} "
                                 f"in the agent's config)")
            value = out.get(name)
            if _unlimited(name, value) or value > cap:
                out[name] = cap
        return out

    def check(self, quota: str, used: float, asked: float = 1) -> None:
        """Refuse (409) taking `asked` more of `quota` when `used` already reaches its limit."""
        limit = self.quotas.get(quota)
        if limit is None:
            return
        top = limit * (1 << 20) if quota == "kept_mb" else limit
        if used + asked > top:
            shown = f"{used / (1 << 20):.1f} MB of {limit} MB" if quota == "kept_mb" else f"{used:g} of {limit}"
            raise Conflict(f"quota {quota}: you hold {shown} ({self.quotas_from[quota]}); "
                           + _REMEDY[quota])


_REMEDY = {
    "jobs": "wait for a job to end or stop one (%joblet stop ID)",
    "sessions": "end a session first",
    "kept_mb": "delete finished jobs you no longer need (%joblet delete ID)",
}


def _unlimited(name: str, value: Any) -> bool:
    return value is None or (name in UNLIMITED_ZERO and value == 0)


def _where(source: str) -> str:
    kind, _, name = source.partition(" ")
    return {"group": f"jupyterhub.groups.{name}.max_limits",
            "user": f"jupyterhub.users.{name}.max_limits"}.get(kind, "jupyterhub")


def for_hub_user(config: HubConfig, user: str, groups: list[str]) -> Policy:
    """The user's own rules win; then, limit by limit, the most generous of their groups; then
    (quotas only) the hub-wide `quotas`."""
    caps, caps_from = _merge("max_limits", LIMIT_NAMES, config, user, groups)
    quotas, quotas_from = _merge("quotas", QUOTA_NAMES, config, user, groups)
    for name in QUOTA_NAMES:
        default = getattr(config.quotas, name)
        if name not in quotas and default is not None:
            quotas[name], quotas_from[name] = default, "jupyterhub.quotas"
    return Policy(caps, caps_from, quotas, quotas_from)


def _merge(section: str, names: tuple[str, ...], config: HubConfig, user: str,
           groups: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    ruled: list[tuple[str, Rules]] = [(f"group {g}", config.groups[g]) for g in sorted(groups)
                                      if g in config.groups]
    for source, rules in ruled:
        for name in names:
            value = getattr(getattr(rules, section), name)
            if value is not None and (name not in values or value > values[name]):
                values[name], sources[name] = value, source
    own = config.users.get(user)
    if own is not None:
        for name in names:
            value = getattr(getattr(own, section), name)
            if value is not None:
                values[name], sources[name] = value, f"user {user}"
    return values, sources

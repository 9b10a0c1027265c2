"""Who the agent takes us for, and what we may use, in words for `%joblet info` (from the agent's
`GET /v1/whoami`: identity, groups, effective limits and quotas with their use)."""

from __future__ import annotations

from typing import Any

UNITS = {"memory_mb": " MB", "disk_mb": " MB", "timeout_s": " s", "cpu_percent": "%", "io_bps": " B/s"}


def describe(who: dict[str, Any]) -> dict[str, str]:
    """Rows for a facts table: who, your maximum limits, your default limits, your quotas."""
    rows = {"you are": _identity(who)}
    top, sources = who.get("max_limits") or {}, who.get("max_limits_from") or {}
    if top:
        rows["your maximum limits"] = ", ".join(
            _limit(name, value) + (f" ({sources[name]})" if sources.get(name, "").startswith(("group", "user"))
                                   else "") for name, value in top.items() if value is not None)
    defaults = who.get("default_limits") or {}
    if defaults:
        rows["limits when a cell sets none"] = ", ".join(_limit(n, v) for n, v in defaults.items() if v not in (None, 0))
    quotas = who.get("quotas") or {}
    shown = [_quota(name, q) for name, q in quotas.items() if isinstance(q, dict) and q.get("limit") is not None]
    if quotas:
        rows["your quotas"] = "; ".join(shown) or "none"
    return rows


def _identity(who: dict[str, Any]) -> str:
    role = f"role {who.get('role', '?')}"
    if who.get("identity") == "jupyterhub":
        groups = ", ".join(who.get("groups") or []) or "none"
        return f"identified by JupyterHub as {who.get('name', '?')} ({role}; groups: {groups})"
    return f"{who.get('name', '?')} ({role}, id {who.get('id', '?')}; an agent token)"


def _limit(name: str, value: Any) -> str:
    if name == "io_bps" and isinstance(value, int) and value >= 1024:
        return f"io {_binary(value)}/s"
    shown = f"{value:g}" if isinstance(value, (int, float)) else str(value)
    return f"{name.removesuffix('_mb').removesuffix('_s').removesuffix('_percent')} {shown}{UNITS.get(name, '')}"


def _binary(value: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if value >= 1 << shift:
            return f"{value / (1 << shift):.3g} {unit}"
    return f"{value} B"


def _quota(name: str, quota: dict[str, Any]) -> str:
    used = quota.get("used")
    unit = " MB" if name == "kept_mb" else ""
    label = {"kept_mb": "kept", "jobs": "jobs at once", "sessions": "sessions at once"}.get(name, name)
    amount = f"{used:g} of {quota['limit']}{unit}" if isinstance(used, (int, float)) else f"at most {quota['limit']}{unit}"
    return f"{label}: {amount}" + (f" ({quota['from']})" if quota.get("from") else "")

"""RSS and PSS of process trees, from /proc (PSS from smaps_rollup)."""

from __future__ import annotations

import os
from typing import Any


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(*roots: int) -> list[int]:
    children = children_map()
    out: dict[int, None] = {}
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out[pid] = None
            todo.extend(children.get(pid, []))
    return list(out)


def rss_pss_kb(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line and not line.startswith(" "))
    except OSError:
        return None
    try:
        return int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])
    except (KeyError, ValueError, IndexError):
        return None


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def tree_memory(*roots: int) -> dict[str, Any]:
    """RSS and PSS summed over the trees under `roots` (MB), and how many processes of each name."""
    rss = pss = 0
    kinds: dict[str, int] = {}
    pss_by_name: dict[str, float] = {}
    pids = process_tree(*roots)
    for pid in pids:
        m = rss_pss_kb(pid)
        if m is None:
            continue
        name = comm(pid)
        kinds[name] = kinds.get(name, 0) + 1
        pss_by_name[name] = pss_by_name.get(name, 0.0) + m[1] / 1024
        rss += m[0]
        pss += m[1]
    return {"processes": len(pids), "by_name": kinds, "pss_mb_by_name": pss_by_name, "tree_rss_mb": rss / 1024,
            "tree_pss_mb": pss / 1024}


def memory_of(agent_pid: int, launcher_pid: int | None) -> dict[str, Any]:
    """RSS and PSS summed over the agent's process tree, over agent + launcher, and of the agent alone.

    RSS sums count shared pages (the Python forks share most of theirs) once per process, so the
    RSS sum overstates; PSS splits every shared page among its sharers and adds up honestly."""
    out = tree_memory(agent_pid)
    agent = rss_pss_kb(agent_pid) or (0, 0)
    launcher = rss_pss_kb(launcher_pid) if launcher_pid else None
    launcher = launcher or (0, 0)
    out.update({"agent_rss_mb": agent[0] / 1024, "agent_pss_mb": agent[1] / 1024,
                "agent_launcher_rss_mb": (agent[0] + launcher[0]) / 1024,
                "agent_launcher_pss_mb": (agent[1] + launcher[1]) / 1024})
    return out


def in_cgroup_subtree(name: str) -> list[int]:
    """Processes in a cgroup named `name` or below it, in any hierarchy: a sandbox process that
    is no longer the agent's descendant (a holder that outlives the agent) is still the agent's."""
    marker = f"/{name}"
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cgroup") as f:
                text = f.read()
        except OSError:
            continue
        if any(line.rpartition(":")[2].startswith(marker) for line in text.splitlines()):
            found.append(int(entry.name))
    return found


def agent_memory(agent_pid: int, launcher_pid: int | None, cgroup_parent: str) -> dict[str, Any]:
    """`memory_of` over the agent's tree and whatever runs in its cgroup parent."""
    mine = set(process_tree(agent_pid))
    extra = [p for p in in_cgroup_subtree(cgroup_parent) if p not in mine]
    out = memory_of(agent_pid, launcher_pid)
    if extra:
        more = tree_memory(*extra)
        for key in ("processes", "tree_rss_mb", "tree_pss_mb"):
            out[key] += more[key]
        for name, n in more["by_name"].items():
            out["by_name"][name] = out["by_name"].get(name, 0) + n
        for name, mb in more["pss_mb_by_name"].items():
            out["pss_mb_by_name"][name] = out["pss_mb_by_name"].get(name, 0.0) + mb
    return out

"""The goals table of issue 11 from one run's results: each figure, its reference, the goal, met or not."""

from __future__ import annotations

import statistics
from typing import Any

Row = dict[str, Any]


def _row(what: str, figure: str, reference: str, relation: str, goal: str, met: bool | None) -> Row:
    return {"what": what, "figure": figure, "reference": reference, "relation": relation, "goal": goal,
            "met": met}


def goal_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "lifecycle" in r:
        s = r["lifecycle"]["rows"]
        ref = s["bwrap"]["median_ms"]
        for name, what, limit in (("launcher", "lifecycle of `true` through the sandbox code", 1.2),
                                  ("agent-http", "lifecycle over HTTP, POST to the exit event", 1.5)):
            x = s[name]["median_ms"] / ref
            rows.append(_row(what, f"{s[name]['median_ms']:.1f} ms", f"bwrap {ref:.1f} ms", f"{x:.2f}x",
                             f"<= {limit}x", x <= limit))
    if "burst" in r:
        b = r["burst"]
        agent, ref = statistics.median(b["agent_s"]), statistics.median(b["bwrap_s"])
        x = agent / ref
        ok = b["failed_count"] == 0
        rows.append(_row(f"{b['jobs']} trivial jobs at once", f"{agent:.2f} s"
                         + ("" if ok else f", {b['failed_count']} FAILED"),
                         f"{b['jobs']} bwraps {ref:.2f} s", f"{x:.2f}x", "all succeed, <= 1.5x", ok and x <= 1.5))
    if "kernel" in r:
        k = r["kernel"]["rows"]
        cell, ref = k["joblet"]["median_ms"], k["bwrap"]["median_ms"]
        rows.append(_row("trivial `%%joblet run` cell through a real kernel", f"{cell:.1f} ms",
                         f"python in bwrap {ref:.1f} ms", f"{cell - ref:+.1f} ms", "<= +15 ms", cell - ref <= 15))
    if "pss" in r:
        p = r["pss"]
        per_job, ref = p["agent"]["per_job_pss_mb"], p["bwrap"]["per_sandbox_pss_mb"]
        rows.append(_row("PSS per running job (agent tree)", f"{per_job:.2f} MB", f"bwrap {ref:.2f} MB",
                         f"{per_job / ref:.1f}x", "<= 1 MB", per_job <= 1.0))
    if "relay" in r:
        rates = r["relay"]["mb_per_s"]
        nb, raw, ref = (statistics.median(rates[k]) for k in ("notebook client", "raw stream", "bwrap pipe"))
        rows.append(_row(f"stdout relay, job to notebook client ({r['relay']['bytes'] / 1e9:.2f} GB, every byte "
                         f"checked)", f"{nb:.0f} MB/s (raw stream {raw:.0f})", f"bwrap pipe {ref:.0f} MB/s",
                         f"{nb / ref:.2f}x", ">= 500 MB/s", nb >= 500))
    if "idle" in r:
        m = r["idle"]
        rss = m["agent_rss_mb"]
        rows.append(_row("agent RSS idle", f"{rss:.1f} MB", f"with the launcher {m['agent_launcher_rss_mb']:.1f} MB",
                         f"whole tree PSS {m['tree_pss_mb']:.1f} MB", "<= 80 MB", rss <= 80))
    return rows


def print_report(rows: list[Row], r: dict[str, Any], cmd: str) -> None:
    print()
    print("| what | figure | reference | vs reference | goal | met |")
    print("|---|---:|---:|---:|---|---|")
    for row in rows:
        met = "yes" if row["met"] else "no"
        print(f"| {row['what']} | {row['figure']} | {row['reference']} | {row['relation']} | {row['goal']} | {met} |")
    print()
    load = r["load_average"]
    print(f"Load average (1/5/15 min) before {' '.join(f'{x:.2f}' for x in load['before'])}, "
          f"after {' '.join(f'{x:.2f}' for x in load['after'])} on {_cpus()} CPUs")
    print(f"Command: `{cmd}`")
    _details(r)


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _details(r: dict[str, Any]) -> None:
    if "lifecycle" in r:
        print("\nLifecycle rows (ms): median / p90")
        for name, s in r["lifecycle"]["rows"].items():
            print(f"  {name:<12} {s['median_ms']:8.2f} {s['p90_ms']:8.2f}")
        print("Where the time goes (medians, ms)")
        for row, phases in r["lifecycle"]["breakdown_ms"].items():
            for phase, ms in phases.items():
                print(f"  {row:<11} {phase:<90} {ms:7.2f}")
    if "cpu" in r:
        c = r["cpu"]
        parts = ", ".join(f"{k} {v:.2f}" for k, v in c["agent_ms"].items())
        print(f"\nCPU per trivial job (ms): {parts}; total {sum(c['agent_ms'].values()):.2f}; "
              f"bwrap {c['bwrap_ms']:.2f}")
    if "kernel" in r:
        print("\nKernel cells (ms): median / p90")
        for name, s in r["kernel"]["rows"].items():
            print(f"  {name:<20} {s['median_ms']:8.2f} {s['p90_ms']:8.2f}")
    if "burst" in r:
        b = r["burst"]
        print(f"\nBurst of {b['jobs']} (s): agent {' '.join(f'{x:.2f}' for x in b['agent_s'])}; "
              f"bwrap {' '.join(f'{x:.2f}' for x in b['bwrap_s'])}")
    if "pss" in r:
        a, b = r["pss"]["agent"], r["pss"]["bwrap"]
        print(f"\nPSS: agent tree idle {a['idle']['tree_pss_mb']:.1f} MB ({a['idle']['processes']} processes), "
              f"with {a['jobs']} jobs {a['busy']['tree_pss_mb']:.1f} MB ({a['busy']['processes']} processes, "
              f"{a['per_job_processes']:.1f} per job: {a['busy']['by_name']}); bwrap {b['busy']['tree_pss_mb']:.1f} MB "
              f"for {b['sandboxes']} ({b['per_sandbox_processes']:.1f} processes each)")
        if "cells" in r["pss"]:
            print(f"PSS per running cell-like job (uploads in a kept /work): {r['pss']['cells']['per_job_pss_mb']:.2f} MB")
        by_name = a["busy"].get("pss_mb_by_name", {})
        if by_name:
            counts = a["busy"]["by_name"]
            print("PSS by process name with the jobs running (MB, total / per process): " + "; ".join(
                f"{name} {mb:.1f} / {mb / counts.get(name, 1):.2f}" for name, mb in sorted(by_name.items())))
    if "relay" in r:
        print("\nRelay (MB/s per run): " + "; ".join(f"{k} {' '.join(f'{x:.0f}' for x in v)}"
                                                      for k, v in r["relay"]["mb_per_s"].items()))

#!/usr/bin/env python3
"""The stdout relay of issue 11, stage by stage, with the end-to-end rows in the same run.

    .venv/bin/python benchmarks/relay_phases.py [--mb 1000] [--holder-read BYTES] [--json PATH]   (as root)

Each stage of the path from a job's stdout to the notebook's `sys.stdout` is measured alone
(benchlib/relay_phases.py says what each times), then the end-to-end rows of goals.py's relay
section (notebook client, raw stream, bwrap pipe). Rates are MB of the job's stdout per second.
Everything made here (an agent root /tmp/jnb-bench-*, its cgroups and processes) is removed at
the end, also on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, when run from anywhere

from benchlib import relay, relay_phases  # noqa: E402
from benchlib.agent import HttpAgent  # noqa: E402
from benchlib.common import RESULTS, command_line, log, run_bench, safely  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, default=1000, help="MB of stdout (default %(default)s)")
    p.add_argument("--holder-read", type=int, default=None,
                   help="read size of the replayed holder stage (default: the holder's own)")
    p.add_argument("--json", default=str(RESULTS / "relay_phases.json"), help="where to write the results")
    return p.parse_args()


def _bench(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    from joblet_agent.sandbox import holder

    load_before = os.getloadavg()
    agent = HttpAgent({"max_output_mb": args.mb + 64})
    cleanup.callback(safely("agent", agent.remove))
    agent.start()
    agent.run_true({})
    read = args.holder_read or getattr(holder, "READ_SIZE", 65536)
    log(f"relay stages: {args.mb} MB of stdout, holder reads of {read} bytes")
    result: dict[str, Any] = relay_phases.measure(agent, args.mb * 1_000_000, read)
    result["mb_per_s"]["end to end: bwrap pipe"] = result["bytes"] / relay.via_bwrap(result["seq_n"])[0] / 1e6
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    result["command"] = command_line()
    _print(result)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    log(f"wrote {path}")
    return 0


def _print(r: dict[str, Any]) -> None:
    print(f"\n{r['bytes'] / 1e9:.2f} GB of stdout (`seq 1 {r['seq_n']}`), log {r['log_bytes'] / 1e9:.2f} GB\n")
    print("| stage | MB/s of stdout |\n|---|---:|")
    for name, value in r["mb_per_s"].items():
        print(f"| {name} | {value:.0f} |")
    cpu = r["cpu_s_per_gb"]
    who = list(next(iter(cpu.values())))
    print(f"\n| live run, CPU s per GB of stdout | {' | '.join(who)} | total |\n|---|{'---:|' * (len(who) + 1)}")
    for name, shares in cpu.items():
        print(f"| {name} | {' | '.join(f'{shares[k]:.2f}' for k in who)} | {sum(shares.values()):.2f} |")
    passes = r["cpu_s_per_gb_by_pass"]
    kinds = list(next(iter(passes.values())))
    print(f"\n| pass over the bytes, alone from memory: CPU s per GB of stdout | {' | '.join(kinds)} |\n"
          f"|---|{'---:|' * len(kinds)}")
    for name, shares in passes.items():
        print(f"| {name} | {' | '.join(f'{shares[k]:.2f}' for k in kinds)} |")
    before, after = r["load_average"]["before"], r["load_average"]["after"]
    print(f"\nLoad average (1/5/15 min) before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, "
          f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"Command: `{r['command']}`")


def main() -> int:
    args = parse_args()
    return run_bench("relay_phases.py", lambda cleanup: _bench(args, cleanup))


if __name__ == "__main__":
    sys.exit(main())

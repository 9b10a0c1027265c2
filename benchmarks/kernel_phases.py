#!/usr/bin/env python3
"""Where a trivial `%%joblet run` cell's time goes, phase by phase, through a real kernel.

    .venv/bin/python benchmarks/kernel_phases.py [--runs N] [--warmup W] [--json PATH]   (as root)

One agent of its own, one ipykernel (jupyter_client), and the same magic in an IPython
InteractiveShell in a subprocess (no kernel, no iopub: what our code costs by itself). Inside both,
`benchlib/probes.py` marks each phase with CLOCK_MONOTONIC, the clock this process uses for the
execute request it sends and each iopub message it receives; the agent's job record gives when
the job was created, started running and ended. Cells run interleaved: `%%joblet run`, the same
with `--no-status`, and the reference of goals.py (python3 in bwrap from the kernel). Medians of
each phase from one run; results also go to benchmarks/results/kernel_phases.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, when run from anywhere

from benchlib import kernel  # noqa: E402
from benchlib.agent import HttpAgent  # noqa: E402
from benchlib.common import RESULTS, command_line, git_head, log, run_bench, safely  # noqa: E402
from benchlib.phases import InProcessShell, KernelCells, phase_table  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30, help="cells per row (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured cells per row (default %(default)s)")
    p.add_argument("--json", default=str(RESULTS / "kernel_phases.json"), help="where to write the results")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    return run_bench("kernel_phases.py", lambda cleanup: _bench(args, cleanup))


def _bench(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    load_before = os.getloadavg()
    log(f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; starting an agent")
    agent = HttpAgent()
    cleanup.callback(safely("agent", agent.remove))
    agent.start()
    agent.run_true({})
    k = kernel.Kernel(agent)
    cleanup.callback(safely("kernel", k.stop))
    k.start()
    cells = KernelCells(k)
    shell = InProcessShell(agent)
    cleanup.callback(safely("in-process shell", shell.stop))
    shell.start()
    log(f"{args.warmup} warm-up cells per row, then {args.runs} rounds, round-robin")
    rows = {"kernel": cells.joblet, "kernel --no-status": cells.joblet_no_status,
            "in-process --no-status": shell.joblet, "kernel bwrap": cells.bwrap}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in rows}
    names = list(rows)
    for i in range(args.warmup + args.runs):
        for name in names[i % len(names):] + names[:i % len(names)]:
            phases = rows[name]()
            if i >= args.warmup:
                samples[name].append(phases)
    load_after = os.getloadavg()
    medians = {name: _medians(s) for name, s in samples.items()}
    print(phase_table(medians))
    print(f"\nLoad average (1/5/15 min) before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in load_after)} on {os.cpu_count()} CPUs")
    print(f"Command: `{command_line()}`")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command_line(), "git": git_head(), "args": vars(args),
                                "load_average": {"before": load_before, "after": load_after},
                                "medians_ms": medians, "samples_ms": samples}, indent=1) + "\n")
    log(f"wrote {path}")
    return 0


def _medians(samples: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in samples[0] if all(k in s for s in samples)] if samples else []
    return {k: statistics.median(s[k] for s in samples) for k in keys}


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What the Landlock layer adds to a job: the job's last two steps before exec (Landlock, then
seccomp) in a forked child, the way the job's process runs them, against seccomp alone.

    .venv/bin/python benchmarks/landlock.py [--runs N]     (N defaults to 2000)

Rows, interleaved round-robin like lifecycle.py (order swapped every round):

  landlock+seccomp  fork; the child sets no_new_privs, applies the production policy (network "none",
                   writable /tmp, /dev/shm and /var/tmp: three rules beside / and /dev, as in a
                   job), loads the production seccomp profile and exits;
  seccomp          the same without Landlock (the sandbox before this layer).

Each row reports the wall time from fork to the parent's waitpid, and the time the child spent in
those steps (perf_counter around them, reported through a pipe): median and p90. The first foreign
call after a fork pays for copy-on-write faults of ctypes' pages, whichever step makes it, so the
difference of the rows is the layer's cost, not `apply()` timed alone. Nothing is left behind: the
children exit at once.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time

from joblet_agent.contract import JobType
from joblet_agent.sandbox import landlock, seccomp

POLICY = landlock.Policy(writable=("/tmp", "/dev/shm", "/var/tmp"), tcp=False)
PR_SET_NO_NEW_PRIVS = 38
_libc = ctypes.CDLL(None, use_errno=True)


def once(apply: bool) -> tuple[float, float]:
    """(fork-to-reap seconds, seconds the child spent in the steps)."""
    r, w = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        t0 = time.perf_counter()
        if apply:
            landlock.apply(POLICY)
        seccomp.load(JobType.STANDARD)
        os.write(w, repr(time.perf_counter() - t0).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    total = time.perf_counter() - start
    with os.fdopen(r, "rb") as f:
        inside = float(f.read())
    return total, inside


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    abi = landlock.abi()
    if abi < 1:
        print(f"this kernel has no Landlock (ABI {abi}): nothing to measure")
        return 0
    seccomp.compile_profile(JobType.STANDARD)  # as the launcher's warm-up does
    rows: dict[str, list[tuple[float, float]]] = {"landlock+seccomp": [], "seccomp": []}
    for i in range(args.runs + 50):
        order = tuple(rows) if i % 2 else tuple(reversed(rows))
        for name in order:
            sample = once(name == "landlock+seccomp")
            if i >= 50:  # warm-up rounds are not counted
                rows[name].append(sample)
    print(f"Landlock ABI {abi}, {args.runs} runs per row, {os.cpu_count()} cores, kernel {os.uname().release}")
    print("| row | fork to reap, median µs | p90 µs | the steps, median µs | p90 µs |")
    print("|---|---:|---:|---:|---:|")
    for name, samples in rows.items():
        total = [s[0] * 1e6 for s in samples]
        inside = [s[1] * 1e6 for s in samples]
        print(f"| {name} | {statistics.median(total):.0f} | {pct(total, 0.9):.0f} | "
              f"{statistics.median(inside):.0f} | {pct(inside, 0.9):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

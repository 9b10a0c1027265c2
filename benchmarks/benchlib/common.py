"""Statistics, logging, signals and the run's provenance (command line, git head)."""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
RESULTS = REPO / "benchmarks" / "results"
PREFIX = "jnb-bench-"


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwind like Ctrl-C so every clean-up step runs. A KeyboardInterrupt, because
    asyncio re-raises only those (and SystemExit) out of a task instead of storing them in it."""


def _on_signal(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def trap_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def ignore_signals() -> None:
    """Clean-up must finish: no further Ctrl-C / SIGTERM while it runs."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def safely(name: str, fn: Callable[[], None]) -> Callable[[], None]:
    """A clean-up step whose failure is reported and does not skip the steps after it."""
    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - one failed step must not skip the others
            log(f"  clean-up step {name} failed: {exc!r}")
    return run


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(values), "p90_ms": pct(values, 0.9), "mean_ms": statistics.fmean(values),
            "min_ms": min(values), "max_ms": max(values), "n": len(values)}


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def command_line() -> str:
    exe = sys.executable
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(exe)
        if not rel.startswith(".."):
            exe = rel
    return shlex.join([exe] + sys.argv)


def git_head() -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "agent", "joblet_nb"],
                               capture_output=True, text=True).stdout.strip()
        return r.stdout.strip() + (" (modified)" if dirty else "")
    except OSError:
        return None


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def host_facts(cgroup_version: str) -> dict[str, object]:
    import platform

    from joblet_agent import __version__

    bwrap = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip()
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "bwrap": bwrap, "cgroup": cgroup_version, "agent": __version__}


def run_bench(name: str, bench: Callable[[contextlib.ExitStack], int]) -> int:
    """Check root and bwrap, then `bench(cleanup)`; every clean-up step it registers runs at the end,
    also after Ctrl-C, SIGTERM or a failure."""
    import shutil

    if os.geteuid() != 0:
        print(f"{name}: run as root (the agent and its sandboxes need root)", file=sys.stderr)
        return 2
    if shutil.which("bwrap") is None:
        print(f"{name}: bwrap not found (apt-get install bubblewrap)", file=sys.stderr)
        return 2
    trap_signals()
    with contextlib.ExitStack() as cleanup:
        try:
            return bench(cleanup)
        except KeyboardInterrupt as exc:
            log(f"\ninterrupted ({type(exc).__name__} {exc}); cleaning up")
            return 130
        except Exception:
            import traceback

            traceback.print_exc()
            log("failed; cleaning up")
            return 1
        finally:
            ignore_signals()

"""Short polls for a kernel state change that sends no event (a cgroup freezing, a link coming up).

Bounded and brief: the caller acts on a False (or goes on, where the change only saves time).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(check: Callable[[], bool], timeout_s: float = 1.0, interval_s: float = 0.005) -> bool:
    """Poll `check` every `interval_s` until it is true (True) or `timeout_s` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True

"""How a job ended, decided from what its sandbox reported and what the agent did to it.

The order of the checks is the contract: a failed set-up wins over everything, a stop or timeout
the agent caused wins over how the job died of it, an OOM kill wins over the SIGKILL it caused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..models import JobStatus, Limits
from ..fs import open_beneath

Verdict = tuple[JobStatus, str, str | None]
OUTPUTS_FILE = ".joblet/outputs.json"


def decide(result: dict[str, Any], stop_reason: str | None, oom: bool, limits: Limits) -> Verdict:
    """(status, reason, message) from the sandbox's result events (`result["event"]` is the first
    of setup_error / exec_error / exit it sent)."""
    kind = result.get("event")
    if kind == "setup_error":
        return JobStatus.FAILED, "setup", result.get("network_error") or result.get("message")
    if stop_reason == "stopped":
        return JobStatus.STOPPED, "stopped", None
    if stop_reason == "timeout":
        return JobStatus.FAILED, "timeout", f"the job ran longer than {limits.timeout_s:g}s"
    if oom:
        return JobStatus.FAILED, "oom", f"the job used more than {limits.memory_mb} MB of memory"
    if kind == "exec_error":
        result["exit_code"] = 127
        return JobStatus.FAILED, "exit", result.get("message")
    if kind != "exit":
        return JobStatus.FAILED, "signal", "the sandbox ended without reporting an exit status"
    if result.get("signal"):
        return JobStatus.FAILED, "signal", f"killed by signal {result['signal']}"
    if result.get("exit_code") == 0:
        return JobStatus.COMPLETED, "exit", None
    return JobStatus.FAILED, "exit", f"exited with code {result.get('exit_code')}"


def outputs_event(artifacts: Path, max_bytes: int) -> dict[str, Any]:
    """The `outputs` event of a script job: its JSON values, their size, and what was missing.
    Sizes are stated and an oversized result is refused whole, never cut."""
    try:
        fd = open_beneath(str(artifacts), OUTPUTS_FILE)
    except OSError:
        return {"type": "outputs", "values": {}, "error": "the cell produced no outputs file"}
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            return {"type": "outputs", "values": {}, "bytes": size,
                    "error": f"outputs are {size} bytes; the limit is {max_bytes}"}
        try:
            data = json.loads(f.read())
        except ValueError:
            return {"type": "outputs", "values": {}, "error": "the outputs file is not JSON"}
    return {"type": "outputs", "values": data.get("values", {}), "bytes": size,
            "missing": data.get("missing", []), "errors": data.get("errors", {})}

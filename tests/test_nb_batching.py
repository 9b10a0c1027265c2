"""A chatty job through a real kernel (jupyter_client): its output reaches the notebook in batches,
every line once, in order, in its own cell, and the number of output messages is bounded by the
batching rule (one per 64 KB, or per 0.1 s the output waited), not by the job's line count."""

from __future__ import annotations

import time
from typing import Any

import pytest

from joblet_nb.core.batching import INTERVAL_S, MAX_BYTES

pytestmark = pytest.mark.root

LINES = 20_000


def test_a_20000_line_job_sends_few_output_messages(kernel):
    code = f"%%joblet run --no-status\nfor i in range({LINES}):\n    print('line', i)"
    messages: list[dict[str, Any]] = []

    def keep(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            messages.append(msg)

    started = time.monotonic()
    reply = kernel.execute_interactive(code, timeout=300, output_hook=keep)
    took = time.monotonic() - started
    assert reply["content"]["status"] == "ok"
    stdout = [m for m in messages if m["content"]["name"] == "stdout"]
    text = "".join(m["content"]["text"] for m in stdout)
    assert text == "".join(f"line {i}\n" for i in range(LINES))  # every line, once, in order
    assert all(m["parent_header"]["msg_id"] == reply["parent_header"]["msg_id"] for m in messages)
    assert all(m["content"]["text"].endswith("\n") for m in stdout), "batches end at a line end"
    bound = len(text.encode()) // MAX_BYTES + took / INTERVAL_S + 2
    assert len(stdout) <= bound, (len(stdout), bound)
    assert len(stdout) < LINES / 100, "hundreds of lines per message, not one message per agent event"


def test_a_quiet_job_still_shows_its_first_line_while_it_runs(kernel, agent):
    """When the first line reaches the kernel the job still runs (it then sleeps two minutes, until
    the test stops it): a follower that held output back to the end would fail here."""
    code = "%%joblet run --no-status\nimport time\nprint('first', flush=True)\ntime.sleep(120)\nprint('last')"
    api = agent.api()
    at_first: list[dict[str, Any]] = []

    def keep(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and "first" in msg["content"]["text"] and not at_first:
            at_first.append(max(api.call("GET", "/v1/jobs").json(), key=lambda j: j["created_at"]))
            api.call("POST", f"/v1/jobs/{at_first[0]['id']}/stop")

    kernel.execute_interactive(code, timeout=300, output_hook=keep)
    assert at_first and at_first[0]["status"] == "RUNNING", at_first
    assert api.wait_for_status(at_first[0]["id"])["status"] == "STOPPED"

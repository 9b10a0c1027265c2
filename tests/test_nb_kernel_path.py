"""A `%%joblet run` cell through a real kernel (jupyter_client), message by message: what the lean
path (events read while the status line is made, no stream flush where nothing waits, the last
output left to the kernel's own flush before the cell's reply) must keep: the status line first,
then the job's output in the cell that ran it, the final state in place, a failure after the output
it printed, and nothing of a cell arriving after its end."""

from __future__ import annotations

import queue
from typing import Any

import pytest

pytestmark = pytest.mark.root

WIDGET = "application/vnd.jupyter.widget-view+json"


def run_cell(kc: Any, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The cell's reply and its iopub messages in the order they came (status ones left out)."""
    msgs: list[dict[str, Any]] = []
    reply = kc.execute_interactive(code, timeout=120, output_hook=msgs.append)
    return reply, [m for m in msgs if m["msg_type"] != "status"]


def kinds(msgs: list[dict[str, Any]]) -> list[str]:
    out = []
    for m in msgs:
        c = m["content"]
        out.append(f"stream:{c['name']}:{c['text']}" if m["msg_type"] == "stream" else m["msg_type"])
    return out


def test_a_trivial_cell_shows_its_status_line_then_its_output_then_its_final_state(kernel):
    reply, msgs = run_cell(kernel, "%%joblet run\nprint('ok')")
    assert reply["content"]["status"] == "ok", reply["content"]
    order = kinds(msgs)
    assert [k for k in order if k.startswith("stream")] == ["stream:stdout:ok\n"], order
    shown = [m for m in msgs if m["msg_type"] == "display_data"]
    updated = [m for m in msgs if m["msg_type"] == "update_display_data"]
    assert len(shown) == 1 and updated, order
    display_id = shown[0]["content"]["transient"]["display_id"]
    assert WIDGET in shown[0]["content"]["data"], shown[0]["content"]["data"].keys()
    assert shown[0]["content"]["data"]["text/plain"].startswith("joblet job="), shown[0]["content"]["data"]
    assert "comm_open" in order and order.index("comm_open") < order.index("display_data"), order
    last = updated[-1]["content"]
    assert last["transient"]["display_id"] == display_id
    assert "state=COMPLETED" in last["data"]["text/plain"], last["data"]["text/plain"]
    assert order.index("display_data") < order.index("stream:stdout:ok\n"), order
    # nothing of the cell comes after its end (the last output was the kernel's to flush)
    first = reply["parent_header"]["msg_id"]
    reply2, _ = run_cell(kernel, "pass")
    assert reply2["content"]["status"] == "ok"
    late = []
    while True:
        try:
            late.append(kernel.get_iopub_msg(timeout=0.5))
        except queue.Empty:
            break
    assert not [m for m in late if m["parent_header"].get("msg_id") == first], late


def test_what_a_cell_printed_before_a_job_comes_before_its_status_line(kernel):
    reply, msgs = run_cell(kernel, "print('before')\n%joblet run -- echo job")
    assert reply["content"]["status"] == "ok", reply["content"]
    order = kinds(msgs)
    assert order.index("stream:stdout:before\n") < order.index("display_data") < order.index("stream:stdout:job\n"), order


def test_a_failed_job_shows_its_output_before_the_error_that_stops_the_notebook(kernel):
    reply, msgs = run_cell(kernel, "%%joblet run --no-status\nimport sys\nprint('partial')\n"
                                   "print('trouble', file=sys.stderr)\nsys.exit(3)")
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "JobFailed", reply["content"]
    order = kinds(msgs)
    assert "stream:stdout:partial\n" in order and "stream:stderr:trouble\n" in order, order
    assert order.index("stream:stdout:partial\n") < order.index("error"), order
    assert order.index("stream:stderr:trouble\n") < order.index("error"), order


"""Runner frames to session events (agent/sessions/protocol.py): pure, and every frame hostile."""

from __future__ import annotations

import json

from joblet_agent.sessions.protocol import FrameSplitter, complete_request, execute_request, translate


def test_frames_split_on_newlines_across_reads():
    splitter = FrameSplitter()
    data = b'{"type":"stdout","data":"a"}\n{"type":"std' + b'err","data":"b"}\n\n{"type":"ready"}'
    assert splitter.feed(data[:10]) == []
    frames = splitter.feed(data[10:])
    assert [f["type"] for f in frames] == ["stdout", "stderr"]
    assert splitter.feed(b"\n") == [{"type": "ready"}]


def test_an_oversized_frame_is_dropped_once_and_the_stream_recovers():
    splitter = FrameSplitter(max_bytes=100)
    frames = splitter.feed(b'{"type":"stdout","data":"' + b"x" * 300)
    frames += splitter.feed(b"x" * 300 + b'"}\n{"type":"ready"}\n')
    assert [f["type"] for f in frames] == ["protocol_error", "ready"]


def test_garbage_becomes_a_protocol_error_frame():
    frames = FrameSplitter().feed(b"not json\n[1, 2]\n{\"no\": \"type\"}\n")
    assert [f["type"] for f in frames] == ["protocol_error"] * 3


def test_the_cell_number_is_the_agents_not_the_frames():
    event = translate({"type": "stdout", "cell": 99, "data": "hi\n"}, cell=3).events[0]
    assert event == {"cell": 3, "type": "stdout", "data": "hi\n"}
    assert translate({"type": "stdout", "data": 5}, cell=3).events == []


def test_display_and_result_data_pass_the_untrusted_filter():
    out = translate({"type": "display", "data": {"text/html": "<script>x</script><b>ok</b>",
                                                 "application/javascript": "x"}}, cell=1)
    data = out.events[0]["data"]
    assert data["text/html"] == "<b>ok</b>" and "application/javascript" in data["text/plain"]
    result = translate({"type": "result", "data": "not a bundle"}, cell=1).events[0]
    assert set(result["data"]) == {"text/plain"}


def test_errors_are_copied_by_field_and_bounded():
    out = translate({"type": "error", "ename": "E" * 1000, "evalue": 5, "traceback": ["a", 1, None] + ["x"] * 1000,
                     "extra": "dropped"}, cell=2).events[0]
    assert set(out) == {"cell", "type", "ename", "evalue", "traceback"}
    assert len(out["ename"]) == 200 and out["evalue"] == "5"
    assert out["traceback"][:3] == ["a", "1", ""] and len(out["traceback"]) == 500


def test_cell_end_status_is_one_of_three_and_outputs_are_bounded():
    out = translate({"type": "cell_end", "status": "pwned", "outputs": {"x": 1}}, cell=4)
    assert out.cell_done == "error" and out.events[0] == {"cell": 4, "type": "cell_end", "status": "error"}
    ok = translate({"type": "cell_end", "status": "ok", "outputs": {"x": 1}, "missing": ["y"]}, cell=4)
    assert ok.events[0] == {"cell": 4, "type": "cell_end", "status": "ok", "outputs": {"x": 1}, "missing": ["y"]}
    big = translate({"type": "cell_end", "status": "ok", "outputs": {"x": "y" * 2000}}, cell=4, max_outputs_bytes=1000)
    assert big.events[0]["outputs"] == {} and "limit is 1000" in big.events[0]["error"]


def test_ready_and_completion_are_for_the_session_not_the_log():
    assert translate({"type": "ready"}, cell=0).ready
    done = translate({"type": "completion", "id": 7, "matches": ["a", 3, "b"], "cursor_start": "x",
                      "cursor_end": 4}, cell=1)
    assert done.events == [] and done.completion == {"id": 7, "matches": ["a", "b"], "cursor_start": 0,
                                                     "cursor_end": 4}


def test_unknown_frames_become_a_note_on_stderr():
    note = translate({"type": "evil<script>"}, cell=1).events[0]
    assert note["type"] == "stderr" and note["data"].startswith("[joblet] session runner:")


def test_requests_are_one_json_line_each():
    line = execute_request(2, "print(1)\n", {"a": 1}, ["b"])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"op": "execute", "cell": 2, "code": "print(1)\n", "inputs": {"a": 1}, "outputs": ["b"]}
    assert json.loads(complete_request(1, "x.", 2)) == {"op": "complete", "id": 1, "code": "x.", "cursor_pos": 2}

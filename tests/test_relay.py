"""A job's stdout relayed to the notebook client (issue 11): every byte, in order, for a large
output through a real agent; a slow reader loses nothing; bytes split across reads and invalid
UTF-8 arrive as the job wrote them (invalid bytes replaced); the output cap cuts once, at its
exact byte; `after=` resumes a large stream exactly. No timing claims (benchmarks/relay_phases.py
measures the pace)."""

from __future__ import annotations

import subprocess
import time
import zlib
from collections.abc import Iterator

import orjson
import pytest

from agentproc import AgentProcess, Api, running_agent
from joblet_nb.core.client import JobletClient
from joblet_nb.core.lines import chunked_lines, ndjson_lines
from joblet_nb.core.request import JobRequest

LARGE_MB = 200


def _seq(n: int) -> bytes:
    return subprocess.run(["seq", "1", str(n)], check=True, capture_output=True).stdout


def _stdout_of(events: Iterator[object]) -> tuple[int, int, object]:
    """Length and CRC-32 of the stdout events' text (UTF-8), and the last event."""
    size, crc, last = 0, 0, None
    for event in events:
        if getattr(event, "type", None) == "stdout":
            data = event.data.encode()  # type: ignore[attr-defined]
            size, crc = size + len(data), zlib.crc32(data, crc)
        last = event
    return size, crc, last


@pytest.fixture(scope="module")
def big_agent() -> Iterator[AgentProcess]:
    with running_agent(f"max_output_mb: {LARGE_MB + 64}\n") as agent:
        yield agent


@pytest.mark.root
def test_a_large_output_reaches_the_notebook_client_whole_and_in_order(big_agent):
    n = 24_000_000  # `seq 1 n`: 200 MB
    want = _seq(n)
    assert len(want) > LARGE_MB * 1_000_000 * 0.9
    client = JobletClient(big_agent.url, big_agent.user_token, timeout=120, stream_timeout=300)
    job_id = client.run_job(JobRequest(command=["seq", "1", str(n)])).id
    size, crc, last = _stdout_of(client.events(job_id))
    assert last.status == "COMPLETED", last  # type: ignore[attr-defined]
    assert (size, crc) == (len(want), zlib.crc32(want)), "bytes were lost, repeated or reordered"
    client.delete_job(job_id)


@pytest.mark.root
def test_a_slow_reader_loses_nothing_and_after_resumes_exactly(big_agent):
    n = 8_000_000  # 63 MB, written far faster than this reader takes it
    want = _seq(n)
    api = big_agent.api()
    job_id = api.submit(command=["seq", "1", str(n)])
    r = api.call("GET", f"/v1/jobs/{job_id}/events", params={"follow": "true"}, stream=True, timeout=300)
    got, lines = bytearray(), []
    assert r.status_code == 200, r.text
    for chunk in r.raw.stream(256 << 10, decode_content=False):
        lines.append(chunk)
        time.sleep(0.005)
    events = [orjson.loads(line) for line in ndjson_lines(iter(lines))]
    for event in events:
        if event["type"] == "stdout":
            got += event["data"].encode()
    assert events[-1]["type"] == "exit" and events[-1]["status"] == "COMPLETED", events[-1]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert bytes(got) == want
    middle = events[len(events) // 2]["seq"]
    rest = api.events(job_id, after=middle, follow=False, timeout=300)
    assert [e["seq"] for e in rest] == [e["seq"] for e in events[middle:]]
    assert "".join(e["data"] for e in rest if e["type"] == "stdout") == \
        "".join(e["data"] for e in events[middle:] if e["type"] == "stdout")
    api.settle(job_id)


SPLIT = """import os, time
os.write(1, b"caf\\xc3"); time.sleep(0.3); os.write(1, b"\\xa9 ok\\n")
os.write(1, b"bad \\xff\\xfe byte\\n"); time.sleep(0.3)
os.write(1, b"half a li"); time.sleep(0.3); os.write(1, b"ne\\n")
os.write(2, b"\\xe2\\x82"); time.sleep(0.3); os.write(2, b"\\xac\\n")
os.write(1, b"no newline at the end")
"""


@pytest.mark.root
def test_bytes_split_across_reads_and_invalid_utf8_arrive_as_written(api: Api, client: JobletClient):
    job_id = api.submit(script=SPLIT)
    events = list(client.events(job_id))
    stdout = "".join(e.data for e in events if e.type == "stdout")
    stderr = "".join(e.data for e in events if e.type == "stderr")
    assert stdout == "café ok\nbad \ufffd\ufffd byte\nhalf a line\nno newline at the end"
    assert stderr == "€\n"
    assert events[-1].status == "COMPLETED"
    api.settle(job_id)


@pytest.mark.root
def test_the_output_cap_cuts_once_at_its_exact_byte():
    n = 400_000  # 2.7 MB of stdout against a 1 MB cap
    want = _seq(n)
    with running_agent("max_output_mb: 1\n") as agent:
        api = agent.api()
        result = api.run(command=["seq", "1", str(n)])
    assert result.record["status"] == "COMPLETED"
    assert result.stdout.encode() == want[:1 << 20]
    notes = [e for e in result.events if e["type"] == "stderr" and "is not kept" in e["data"]]
    assert len(notes) == 1 and "beyond 1 MB" in notes[0]["data"], result.stderr[-500:]
    assert result.stderr == notes[0]["data"]


def test_ndjson_lines_split_anywhere_are_joined_once_and_a_cut_piece_is_dropped():
    stream = b'{"seq":1}\n\n{"seq":2,"data":"' + b"x" * 1000 + b'"}\n \n{"seq":3}\n{"seq":4,"cut'
    for size in (1, 3, 7, 64, 999, len(stream)):
        chunks = iter([stream[i:i + size] for i in range(0, len(stream), size)])
        lines = [bytes(line) for line in ndjson_lines(chunks)]
        assert lines == [b'{"seq":1}', b'{"seq":2,"data":"' + b"x" * 1000 + b'"}', b'{"seq":3}'], size


def _chunked(body: bytes, size: int, trailers: bytes = b"") -> bytes:
    """`body` in HTTP/1.1 chunked framing, chunks of `size` bytes (an extension on the first)."""
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    framed = b"".join(b"%x%s\r\n%s\r\n" % (len(p), b";x=1" if i == 0 else b"", p) for i, p in enumerate(pieces))
    return framed + b"0\r\n" + trailers + b"\r\n"


def test_chunked_lines_read_into_one_buffer_are_whole_whatever_the_chunks_and_buffer():
    import io

    long = b'{"seq":2,"data":"' + b"x" * 1000 + b'"}'
    stream = b'{"seq":1}\n\n' + long + b'\n \n{"seq":3}\n' + long.replace(b"2", b"4", 1) + b'\n{"seq":5,"cut'
    want = [b'{"seq":1}', long, b'{"seq":3}', long.replace(b"2", b"4", 1)]
    for size in (1, 3, 7, 64, 999, 1500, len(stream)):
        for buffer, first in ((8, 8), (100, 100), (1024, 1024), (4096, 4096), (4096, 2), (1024, 16)):
            # lines longer than the buffer, moves to its front, a buffer grown with a line's start in it
            reader = io.BufferedReader(io.BytesIO(_chunked(stream, size, b"x-t: 1\r\n")), 16)
            lines = [bytes(line) for line in chunked_lines(reader, buffer, first)]
            assert lines == want, (size, buffer, first)
            assert reader.read() == b"", "the body was not read to its end"


def test_a_small_stream_never_makes_the_large_buffer():
    import io
    import tracemalloc

    from joblet_nb.core.lines import BUFFER

    body = b'{"seq":1,"type":"stdout","data":"hi\\n"}\n{"seq":2,"type":"exit"}\n'
    tracemalloc.start()
    try:
        lines = list(map(bytes, chunked_lines(io.BufferedReader(io.BytesIO(_chunked(body, 17))))))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(lines) == 2 and peak < BUFFER // 8, peak
    big = b"".join(b'{"seq":%d,"data":"%s"}\n' % (i, b"x" * 9000) for i in range(1000))  # 9 MB
    assert list(map(bytes, chunked_lines(io.BufferedReader(io.BytesIO(_chunked(big, 1 << 20)))))) == big.split(b"\n")[:-1]


@pytest.mark.parametrize("framed", [b"zz\r\nab\r\n0\r\n\r\n", b"5\r\nab", b"2\r\nab0\r\n\r\n",
                                    b"2\r\nab\r\n", b"%s\r\n" % (b"1" * 2000)])
def test_chunked_lines_refuse_a_broken_framing_as_urllib3_does(framed):
    import io

    import requests

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(chunked_lines(io.BufferedReader(io.BytesIO(framed)), 64))


@pytest.mark.root
def test_an_agents_event_stream_is_read_into_the_reused_buffer(api: Api, client: JobletClient):
    from joblet_nb.core.lines import raw_chunked_reader

    job_id = api.submit(command=["echo", "hi"])
    resp = client._request("GET", f"/v1/jobs/{job_id}/events", params={"follow": "true"}, stream=True)
    try:
        reader = raw_chunked_reader(resp)
        assert reader is not None, "the stream took the slow way (iter_content)"
        events = [orjson.loads(line) for line in chunked_lines(reader)]
    finally:
        resp.close()
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "hi\n"
    assert events[-1]["type"] == "exit"
    api.settle(job_id)


def test_the_notebook_reads_ahead_of_its_writer_a_bounded_amount_of_output(monkeypatch):
    from joblet_nb.core import stream
    from joblet_nb.core.events import OutputEvent
    from waiting import wait_until

    monkeypatch.setattr(stream, "QUEUE_BYTES", 4 << 20)
    produced: list[int] = []

    class Endless:
        def events(self, job_id: str, after: int, follow: bool) -> Iterator[OutputEvent]:
            while True:
                produced.append(1)
                yield OutputEvent(len(produced), "stdout", data="x" * (1 << 20))

    pump = stream.EventPump(Endless(), "job", 0)  # type: ignore[arg-type]
    try:
        wait_until(lambda: len(produced) >= 6, message="the pump did not read")
        time.sleep(0.5)  # it waits for room: nothing more is read while nobody takes
        assert len(produced) == 6  # 5 queued (4 MB and one more), the 6th waits for room
        for _ in range(3):
            pump.get(timeout=5)
        wait_until(lambda: len(produced) >= 9, message="the pump did not go on once there was room")
    finally:
        pump.close()


HOSTILE = rb'''"}
{"seq":999999,"type":"exit","status":"COMPLETED","exit_code":0}
\"}\n{"seq":1000000,"type":"stdout","data":"forged"}\\'''
PIECES = [  # each its own write, a moment apart: each its own read of the holder
    HOSTILE, b"\n", bytes(range(32)) + b"\x7f NUL \x00 LS \xe2\x80\xa8 PS \xe2\x80\xa9\n",
    b"cut \xe2\x82", b"\xff invalid after a cut\n",        # the start of a character, then no rest
    b"emoji \xf0", b"\x9f\x98", b"\x80 in three reads\n",    # a four-byte character over three reads
    b"surrogate \xed\xa0\x80 overlong \xc0\xaf\n", b"ends cut \xe2\x82",  # the stream ends in a character
]
HOSTILE_SCRIPT = f"""import os, time, sys
for piece in {PIECES!r}:
    os.write(1, piece)
    time.sleep(0.15)
sys.exit(3)
"""


@pytest.mark.root
def test_hostile_output_reaches_the_client_exactly_and_forges_no_event(api: Api, client: JobletClient):
    """What a job prints is data all the way: a line that looks like the end of the event and an
    exit event of its own, quotes and backslashes, NUL and every control byte, U+2028/2029, and
    invalid UTF-8 split across reads all arrive as `bytes.decode("utf-8", "replace")` of the whole
    output; the stream's one exit event is the agent's (the job exited 3)."""
    job_id = api.submit(script=HOSTILE_SCRIPT)
    events = list(client.events(job_id))
    stdout = "".join(e.data for e in events if e.type == "stdout")  # type: ignore[attr-defined]
    assert stdout == b"".join(PIECES).decode("utf-8", "replace")
    assert [e.type for e in events].count("exit") == 1 and events[-1].type == "exit"
    assert events[-1].status == "FAILED" and events[-1].exit_code == 3, events[-1]  # type: ignore[attr-defined]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    raw = api.events(job_id, follow=False)
    assert "".join(e["data"] for e in raw if e["type"] == "stdout") == stdout
    api.settle(job_id)


def test_the_holder_decodes_any_split_of_the_output_as_the_whole_is_decoded():
    """TextOutput, read by read: whatever the read boundaries, the text equals the one-shot decode
    (invalid bytes replaced), and a cap cuts at its byte (a character it cuts shows as U+FFFD)."""
    import random
    import types

    from joblet_agent.sandbox.output import TextOutput

    rng = random.Random(11)
    parts = [b"a", b"\n", b'"', b"\\", b"\x00", b"\x1f", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80",
             b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf"]
    for _ in range(2000):
        raw = b"".join(rng.choice(parts) for _ in range(rng.randint(0, 40)))
        cap = rng.choice([0, 0, rng.randint(1, 60)])
        out = TextOutput(types.SimpleNamespace(max_output_bytes=cap))  # type: ignore[arg-type]
        cuts = sorted(rng.sample(range(1, len(raw)), min(max(len(raw) - 1, 0), rng.randint(0, 6))))
        reads = [raw[a:b] for a, b in zip([0] + cuts, cuts + [len(raw)])] + [b""]
        events = [e for read in reads for e in out.output("stdout", read).events]
        text = "".join(e["data"] for e in events if e["type"] == "stdout")
        kept = raw[:cap] if cap else raw
        assert text == kept.decode("utf-8", "replace"), (raw, reads, cap)
        notes = [e for e in events if e["type"] == "stderr"]
        assert len(notes) == (1 if cap and len(raw) > cap else 0), (raw, cap)


def test_the_relay_benchmarks_sink_fails_a_lost_repeated_or_reordered_byte():
    """benchmarks/benchlib/relay.py's sink compares each write with the expected output in place
    (no CRC): the exact output in any split passes; a byte lost, repeated, swapped or extra fails."""
    import importlib
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        relay = importlib.import_module("benchlib.relay")
    finally:
        sys.path.remove(str(folder))
    text = _seq(5000).decode()
    swapped = text[:100] + text[101] + text[100] + text[102:]
    with relay.Expected(5000) as expected:
        def written(pieces: list[str]) -> tuple[int, int]:
            sink = relay.Sink(expected)
            for piece in pieces:
                sink.write(piece)
            return sink.result()

        assert written([text]) == expected.want
        assert written([text[:7], "", text[7:4000], text[4000:]]) == expected.want
        for bad in ([text[:50], text[51:]], [text[:50], text[49:]], [swapped], [text, "1"], [text[:-1]]):
            assert written(bad) != expected.want

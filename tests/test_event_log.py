"""A job's event log as followers read it: every event once, in order, up to the exit event, also
when the log holds more than one read, a line longer than a read, or lines written while reading."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from joblet_agent.jobs import store
from joblet_agent.jobs.store import EventLog
from waiting import run_coroutine


def _collect(log: EventLog, after: int = 0, follow: bool = True) -> list[dict]:
    async def run() -> list[dict]:
        return [e async for e in log.follow(after=after, follow=follow)]

    return run_coroutine(run())


def _raw(log: EventLog, after: int = 0, follow: bool = False) -> bytes:
    async def run() -> bytes:
        return b"".join([c async for c in log.follow_lines(after=after, follow=follow)])

    return run_coroutine(run())


def _filled(tmp_path, texts: list[str], exit_event: bool = True) -> EventLog:
    async def run() -> EventLog:
        log = EventLog(tmp_path / "events.ndjson")
        for text in texts:
            log.append({"type": "stdout", "data": text})
        if exit_event:
            log.append({"type": "exit", "status": "COMPLETED", "exit_code": 0, "reason": None})
        return log

    return run_coroutine(run())


@pytest.mark.parametrize("read_at_most", [64, 1 << 20])
def test_history_is_every_event_after_the_seq_once(tmp_path, monkeypatch, read_at_most):
    monkeypatch.setattr(store, "READ_AT_MOST", read_at_most)  # 64: many reads, lines longer than one
    texts = [f"line {i}\n" * (i % 7 + 1) for i in range(300)]
    log = _filled(tmp_path, texts)
    events = _collect(log)
    assert [e["seq"] for e in events] == list(range(1, 302))
    assert "".join(e["data"] for e in events[:-1]) == "".join(texts)
    assert events[-1]["type"] == "exit"
    assert [e["seq"] for e in _collect(log, after=250)] == list(range(251, 302))
    assert _collect(log, after=301) == []


def test_lines_are_the_log_bytes_and_stop_at_the_exit_event(tmp_path):
    log = _filled(tmp_path, ['quote " backslash \\ newline \n {"seq":9,"type":"exit"}'])
    with open(log.path, "ab") as f:  # nothing after the exit event is ever sent
        f.write(b'{"seq":3,"type":"stdout","data":"late"}\n')
    raw = _raw(log)
    assert raw == log.path.read_bytes()[:raw.rfind(b"\n") + 1]
    assert [json.loads(line)["type"] for line in raw.splitlines()] == ["stdout", "exit"]
    assert json.loads(raw.splitlines()[0])["data"].endswith('{"seq":9,"type":"exit"}')


def test_a_line_in_another_key_order_is_still_read(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text('{"type":"stdout","seq":1,"data":"a"}\n{"seq":2,"type":"exit","status":"COMPLETED"}\n')
    log = EventLog(path)
    assert log.seq == 2
    assert [e["seq"] for e in _collect(log, after=1, follow=False)] == [2]


def test_the_last_seq_of_a_long_log_comes_from_its_end(tmp_path):
    log = _filled(tmp_path, ["x" * 50_000] * 40, exit_event=False)
    with open(log.path, "ab") as f:
        f.write(b'{"seq":41,"type":"stdout","da')  # a torn line is not an event
    assert EventLog(log.path).seq == 40


def test_a_follower_gets_what_is_appended_while_it_reads(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "READ_AT_MOST", 4096)

    async def run() -> list[dict]:
        log = EventLog(tmp_path / "events.ndjson")
        got: list[dict] = []

        async def follower() -> None:
            async for event in log.follow(after=0, follow=True):
                got.append(event)

        task = asyncio.create_task(follower())
        for i in range(200):
            log.append({"type": "stdout", "data": f"{i}\n" * 50})
            if i % 10 == 0:
                await asyncio.sleep(0)
        log.append({"type": "exit", "status": "COMPLETED", "exit_code": 0, "reason": None})
        await asyncio.wait_for(task, 10)
        return got

    got = run_coroutine(run())
    assert [e["seq"] for e in got] == list(range(1, 202))
    assert "".join(e["data"] for e in got[:-1]) == "".join(f"{i}\n" * 50 for i in range(200))


def test_followers_that_end_give_the_heap_back_once_a_moment_later(tmp_path, monkeypatch):
    """A relay's large steps stay in malloc's heap while followers read (no page fault per step);
    once they end, one trim a moment later gives the free pages back, for all that ended together,
    also when a reader leaves in the middle."""
    trims: list[float] = []
    monkeypatch.setattr(store.libc, "return_free_heap", lambda: trims.append(asyncio.get_running_loop().time()))
    monkeypatch.setattr(store.HeapTrim, "AFTER_S", 0.05)
    monkeypatch.setattr(store.HeapTrim, "due", None)
    log = _filled(tmp_path, ["x" * 1000] * 5)

    async def run() -> tuple[int, float]:
        assert len([c async for c in log.follow_lines(follow=False)]) == 1
        ended = asyncio.get_running_loop().time()
        lines = log.follow_lines(follow=False)
        await lines.__anext__()
        await lines.aclose()  # a reader that left
        assert [e["seq"] async for e in log.follow(follow=False)][-1] == 6
        assert trims == []  # not while the followers read
        await asyncio.sleep(0.2)
        return len(trims), trims[0] - ended if trims else 0.0

    count, after = run_coroutine(run())
    assert count == 1 and after >= 0.05


def test_giving_the_heap_back_is_a_real_call():
    store.libc.return_free_heap()  # malloc_trim(0) of the C library the agent runs on


def _ranged(log: EventLog, after: int = 0, follow: bool = False) -> tuple[bytes, list[str]]:
    """What the HTTP stream sends with `ranges` (a range read while it is the current item, as the
    server sends it), and the kind of each item."""
    from joblet_agent.jobs.loglines import LogRange

    async def run() -> tuple[bytes, list[str]]:
        got, kinds, fds = bytearray(), [], []
        async for item in log.follow_lines(after=after, follow=follow, ranges=True):
            if isinstance(item, LogRange):
                got += b"".join(item.pieces(size=1000))
                kinds.append("range")
                fds.append(item.fd)
            else:
                got += item
                kinds.append("read")
        for fd in fds[-1:]:  # the range's descriptor is closed once the next item is asked for
            with pytest.raises(OSError):
                os.fstat(fd)
        return bytes(got), kinds

    return run_coroutine(run())


def test_ranges_are_the_log_bytes_the_lines_are(tmp_path, monkeypatch):
    """Past `after`, the complete lines go out as ranges of the log (sent by the server without a
    read), exactly the bytes the reads yield: from the start, from the middle, past the end."""
    monkeypatch.setattr(store, "READ_AT_MOST", 4096)  # the first read holds some lines, not all
    monkeypatch.setattr(store, "RANGE_FROM", 1)
    log = _filled(tmp_path, [f"line {i}\n" * (i % 7 + 1) for i in range(300)])
    for after in (0, 1, 150, 300, 301):
        raw, kinds = _ranged(log, after=after)
        assert raw == _raw(log, after=after), after
        assert "range" in kinds or after >= 300, (after, kinds)
    assert _ranged(log, after=0)[0] == log.path.read_bytes()
    monkeypatch.setattr(store, "RANGE_FROM", 1 << 20)  # fewer bytes than this are read, as before
    raw, kinds = _ranged(log, after=0)
    assert raw == log.path.read_bytes() and "range" not in kinds


@pytest.mark.parametrize("live_from", [1, 1 << 30])
def test_a_range_ends_at_the_last_complete_line_and_a_live_log_is_followed_to_its_exit(tmp_path, monkeypatch,
                                                                                      live_from):
    """A live log's complete lines go as ranges where they are `LIVE_RANGE_FROM` bytes or more, else
    they are read; either way a line still being written is not sent until it ends."""
    monkeypatch.setattr(store, "RANGE_FROM", 1)
    monkeypatch.setattr(store, "LIVE_RANGE_FROM", live_from)

    async def run() -> tuple[bytes, list[str], bytes]:
        from joblet_agent.jobs.loglines import LogRange

        log = EventLog(tmp_path / "events.ndjson")
        log.append({"type": "stdout", "data": "first\n"})
        got, kinds = bytearray(), []

        async def follower() -> None:
            async for item in log.follow_lines(after=0, follow=True, ranges=True):
                got.extend(b"".join(item.pieces()) if isinstance(item, LogRange) else item)
                kinds.append("range" if isinstance(item, LogRange) else "read")

        task = asyncio.create_task(follower())
        for i in range(100):
            log.append({"type": "stdout", "data": f"{i} \" \\ \n" * 100})
            if i % 7 == 0:
                await asyncio.sleep(0)
        with open(log.path, "ab") as f:  # a writer in the middle of its line: not sent until it ends
            f.write(b'{"seq":102,"type":"stdout","data":"ha')
        log.advanced(102)
        for _ in range(5):
            await asyncio.sleep(0.01)
        partial = bytes(got)
        with open(log.path, "ab") as f:
            f.write(b'lf"}\n')
        log.advanced(102)
        log.append({"type": "exit", "status": "COMPLETED", "exit_code": 0, "reason": None})
        await asyncio.wait_for(task, 10)
        return partial, kinds, bytes(got)

    partial, kinds, got = run_coroutine(run())
    whole = (tmp_path / "events.ndjson").read_bytes()
    assert got == whole
    assert ("range" in kinds[:-1]) == (live_from == 1), kinds  # a live log's large steps go unread
    assert partial == whole[:whole.index(b'{"seq":102,')]
    assert json.loads(got.splitlines()[-1])["type"] == "exit"


def test_a_ranged_stream_is_not_sent_past_an_exit_event(tmp_path, monkeypatch):
    """A closed log is sent as a range only up to an exit event that ends it; anything written after
    an exit (never, by the writers) is read and cut as the reads cut it."""
    monkeypatch.setattr(store, "RANGE_FROM", 1)
    log = _filled(tmp_path, ["a\n"] * 20)
    with open(log.path, "ab") as f:
        f.write(b'{"seq":22,"type":"stdout","data":"late"}\n')
    raw, _ = _ranged(log)
    assert raw == _raw(log)
    assert [json.loads(line)["type"] for line in raw.splitlines()][-1] == "exit"
    assert b"late" not in raw
    log2 = EventLog(tmp_path / "open.ndjson")  # a log not closed whose last line is an exit
    (tmp_path / "open.ndjson").write_bytes(log.path.read_bytes()[:log.path.read_bytes().index(b'{"seq":22')])
    log2.advanced(21)
    raw2, _ = _ranged(log2, follow=True)
    assert raw2 == raw


def test_a_live_log_far_ahead_of_its_reader_is_read_a_step_at_a_time(tmp_path, monkeypatch):
    """A job that wrote much while its reader was slow: the follower of the live log holds one step
    (`READ_AT_MOST`, or one line longer than that) at a time, not all it is behind, and still yields
    every byte once, in order, to the exit event."""
    monkeypatch.setattr(store, "READ_AT_MOST", 4096)

    async def run() -> tuple[list[int], bytes]:
        log = EventLog(tmp_path / "events.ndjson")
        log.append({"type": "stdout", "data": "first\n"})
        items = log.follow_lines(after=0, follow=True, ranges=True)
        got = bytearray(await items.__anext__())
        sizes = []
        for i in range(300):  # a dozen steps written while the reader takes nothing
            log.append({"type": "stdout", "data": f"{i}\n" * (i % 50 + 1) if i != 150 else "x" * 9000})
        log.append({"type": "exit", "status": "COMPLETED", "exit_code": 0, "reason": None})
        async for item in items:
            sizes.append(len(item))
            got += item
        return sizes, bytes(got)

    sizes, got = run_coroutine(run())
    whole = (tmp_path / "events.ndjson").read_bytes()
    assert got == whole
    longest = max(len(line) + 1 for line in whole.splitlines())
    assert len(sizes) >= 10 and max(sizes) <= max(4096, longest), sizes

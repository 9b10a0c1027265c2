"""The stdout relay broken into its stages, each measured alone in one run, so that the slowest
one is named by a figure and not guessed.

Every rate is in MB of the job's stdout per second (the log's NDJSON is a little larger: the
JSON escapes of the newlines), so the stages compare directly with each other and with the
end-to-end rows of relay.py:

  seq pipe          `seq 1 N` (no sandbox) into a pipe read here: how fast the job's side can go,
                    at the holder's read size, and with 1 MiB reads from a 1 MiB pipe
  holder translate  the holder's own code on the job's bytes, replayed from memory in reads of the
                    holder's size: the translator (UTF-8 decode, the output cap) and the log's
                    append (JSON encode, one write(2) per batch) into a log on disk
  job to log        a real job through the agent, from the POST until its record says it ended:
                    seq, pipe, holder and log write as production runs them, nobody following
  agent log read    the agent's follower (`EventLog.follow_lines`) over that finished log, in an
                    event loop of its own here: read(2) in bounded steps and the seq/type scan
  HTTP, ended log   the finished job's events over HTTP (`follow=false`), read with http.client
                    in 1 MiB reads: agent log read + uvicorn + TCP, no parsing on the client
  client parse      the notebook client's reader over the finished job (`follow_events`, dicts)
  client events     `JobletClient.events()` (typed events) over the finished job
  client follower   `JobFollower.history()` writing to a checksumming `sys.stdout`: the whole
                    notebook side, every byte checked

Apart from the stages, `byte_passes` takes the passes over the bytes that run in Python (the
holder's decode, JSON encode and log write, the client's JSON decode) alone, from memory, in CPU
seconds per GB, on seq's lines and on 80-column lines: what each costs at best.

On a shared 2-core machine wall-clock rates swing with the load; the CPU each process spends per
GB of stdout swings far less. So the live runs (job to log, and relay.py's notebook client and raw
stream rows) also report CPU seconds per GB by process: the job's holder (sampled from /proc while
it lives), the rest of the sandbox (the job's `seq` and its init: the cgroup parent's accounting
minus the holder), the agent process, and this process (the client). On an idle machine the
relay's pace is bounded by the total over the two cores and by its busiest process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import threading
import time
import types
import zlib
from pathlib import Path
from typing import Any

import orjson

from .agent import HttpAgent
from .cpu import cgroup_cpu_s, process_cpu_s, self_cpu_s
from .memory import children_map, comm
from . import relay
from .relay import READ, Expected, Sink, seq_for, via_notebook_client

SEGMENT = 8 << 20  # the replayed sample of seq's output


class CpuShares:
    """CPU seconds by process over one live run (see the module's doc)."""

    def __init__(self, agent: HttpAgent) -> None:
        assert agent.proc is not None
        self.agent, self.pid = agent, agent.proc.pid
        self.holders: dict[int, float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "CpuShares":
        self.before = (process_cpu_s(self.pid), cgroup_cpu_s(self.agent.cgroup_parent) or 0.0, self_cpu_s())
        self.old = set(self._holders())  # an earlier job's holder may still be ending: not this run's
        self.thread.start()
        return self

    def _holders(self) -> list[int]:
        return [pid for pid in children_map().get(self.agent.launcher_pid or -1, []) if comm(pid) == "jnb-holder"]

    def _sample(self) -> None:
        while not self.done.wait(0.05):
            for pid in list(self.holders) or [p for p in self._holders() if p not in self.old]:
                with contextlib.suppress(OSError):
                    self.holders[pid] = process_cpu_s(pid)

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        after = (process_cpu_s(self.pid), cgroup_cpu_s(self.agent.cgroup_parent) or 0.0, self_cpu_s())
        holder = sum(self.holders.values())
        self.seconds = {"holder": holder, "seq and init": after[1] - self.before[1] - holder,
                        "agent": after[0] - self.before[0], "client": after[2] - self.before[2]}

    def per_gb(self, size: int) -> dict[str, float]:
        return {k: round(v / size * 1e9, 3) for k, v in self.seconds.items()}


def seq_pipe(n: int, read_size: int, pipe_size: int = 0) -> tuple[float, int, int]:
    """`seq 1 n` into a pipe read here with `read_size` reads (pipe raised to `pipe_size` if set)."""
    r, w = os.pipe()
    if pipe_size:
        import fcntl

        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, pipe_size)
    t0 = time.perf_counter()
    proc = subprocess.Popen(["seq", "1", str(n)], stdout=w)
    os.close(w)
    size, crc = 0, 0
    while chunk := os.read(r, read_size):
        size += len(chunk)
        crc = zlib.crc32(chunk, crc)
    os.close(r)
    proc.wait()
    return time.perf_counter() - t0, size, crc


def _sample(n: int) -> bytes:
    """SEGMENT bytes of seq's output from the middle of the range (lines as long as most of it)."""
    start = max(1, n - SEGMENT // 9)
    out = subprocess.run(["seq", str(start), str(n)], check=True, capture_output=True).stdout
    return out[:SEGMENT]


def holder_translate(total: int, read_size: int, sample: bytes) -> tuple[float, int]:
    """The holder's steps for each read: translator.output, then the log's append."""
    from joblet_agent.eventfile import EventFile
    from joblet_agent.sandbox.output import TextOutput

    spec = types.SimpleNamespace(max_output_bytes=0)
    with tempfile.TemporaryDirectory(prefix="jnb-bench-holder-") as tmp:
        log = EventFile.open(str(Path(tmp) / "events.ndjson"))
        out = TextOutput(spec)  # type: ignore[arg-type]
        view, done, pos = memoryview(sample), 0, 0
        t0 = time.perf_counter()
        while done < total:
            step = min(read_size, total - done, len(sample) - pos)
            data = bytes(view[pos:pos + step])  # a read(2) returns a fresh bytes object
            log.append(out.output("stdout", data).events)
            done += step
            pos = 0 if pos + step >= len(sample) else pos + step
        elapsed = time.perf_counter() - t0
        size = os.fstat(log.fd).st_size
        log.close()
    return elapsed, size


def byte_passes(read_size: int, sample: bytes, total: int = 256 << 20) -> dict[str, dict[str, float]]:
    """CPU seconds per GB of stdout of each pass over the bytes that runs in Python, alone, from
    memory (the best of three): on seq's short lines and on 80-column lines of the same size, as
    the JSON escapes (one per line) set what the encode and decode cost."""
    from joblet_agent.eventfile import encode
    from joblet_agent.sandbox.output import TextOutput

    lines = (b"x" * 79 + b"\n") * (len(sample) // 80)
    result: dict[str, dict[str, float]] = {}
    for label, data in (("seq's lines", sample), ("80-column lines", lines)):
        reads = [data[i:i + read_size] for i in range(0, len(data) - read_size + 1, read_size)]
        rounds = max(1, total // (len(reads) * read_size))
        text = [TextOutput(types.SimpleNamespace(max_output_bytes=0)).output("stdout", r).events[0] for r in reads]
        encoded = [encode(i, e) for i, e in enumerate(text)]
        with tempfile.TemporaryDirectory(prefix="jnb-bench-passes-") as tmp:
            fd = os.open(os.path.join(tmp, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            passes = {  # each result is dropped at once, as the holder and the client drop theirs
                "holder: UTF-8 decode, cap (TextOutput)": lambda: _each(lambda r: TextOutput(
                    types.SimpleNamespace(max_output_bytes=0)).output("stdout", r), reads),  # type: ignore[arg-type]
                "holder: JSON encode (orjson)": lambda: _each(lambda e: encode(1, e), text),
                "holder: log write(2)": lambda: _each(lambda line: os.write(fd, line), encoded),
                "client: JSON decode (orjson.loads)": lambda: _each(orjson.loads, encoded),
            }
            for name, run in passes.items():
                best = min(_cpu_of(run, rounds) for _ in range(3))
                result.setdefault(name, {})[label] = round(best / (rounds * len(reads) * read_size) * 1e9, 3)
                os.ftruncate(fd, 0)
            os.close(fd)
    return result


def _each(work: Any, items: list[Any]) -> None:
    for item in items:
        work(item)


def _cpu_of(run: Any, rounds: int) -> float:
    t0 = time.process_time()
    for _ in range(rounds):
        run()
    return time.process_time() - t0


def job_to_log(agent: HttpAgent, n: int) -> tuple[float, str]:
    """POST `seq 1 n` and wait until its log on disk ends with the exit event (its tail read every
    20 ms here: polling the agent would cost the agent CPU)."""
    from joblet_agent.paths import AgentPaths

    t0 = time.perf_counter()
    job_id = agent.submit(["seq", "1", str(n)])
    path = AgentPaths.at(agent.root).job_state / job_id / "events.ndjson"
    while b'"type":"exit"' not in _tail(path):
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    if agent.status(job_id) != "COMPLETED":
        raise RuntimeError(f"relay job {job_id} did not complete")
    return elapsed, job_id


def _tail(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            return f.read()
    except FileNotFoundError:
        return b""


def raw_stream(agent: HttpAgent, n: int) -> tuple[float, list[bytes]]:
    """relay.py's raw stream row, the check left to the caller (after the CPU is counted)."""
    job_id, elapsed, parts = relay.raw_stream(agent, n)
    agent.delete(job_id)
    return elapsed, parts


def _stdout_of(parts: list[bytes]) -> tuple[int, int]:
    size, crc, last = 0, 0, b""
    for line in b"".join(parts).splitlines():
        event = json.loads(line)
        if event["type"] == "stdout":
            data = event["data"].encode()
            size, crc = size + len(data), zlib.crc32(data, crc)
        last = event.get("status", "")
    if last != "COMPLETED":
        raise RuntimeError(f"relay job (raw stream) ended {last!r}")
    return size, crc


def agent_log_read(path: Path) -> tuple[float, int]:
    from joblet_agent.jobs.store import EventLog

    async def run() -> int:
        log = EventLog(path)
        log.close()
        got = 0
        async for chunk in log.follow_lines(0, follow=False):
            got += len(chunk)
        return got

    t0 = time.perf_counter()
    got = asyncio.run(run())
    return time.perf_counter() - t0, got


def http_ended(agent: HttpAgent, job_id: str) -> tuple[float, int]:
    conn = agent.connection()
    t0 = time.perf_counter()
    conn.request("GET", f"/v1/jobs/{job_id}/events?follow=false",
                 headers={"Authorization": f"Bearer {agent.token}"})
    resp = conn.getresponse()
    got = 0
    while chunk := resp.read(READ):
        got += len(chunk)
    elapsed = time.perf_counter() - t0
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"GET events: {resp.status}")
    return elapsed, got


def _client(agent: HttpAgent) -> Any:
    from joblet_nb.core.client import JobletClient

    return JobletClient(agent.url, agent.token, timeout=300, stream_timeout=300)


def client_parse(agent: HttpAgent, job_id: str) -> tuple[float, int]:
    client = _client(agent)
    t0 = time.perf_counter()
    count = sum(1 for _ in client.follow_events(f"/v1/jobs/{job_id}/events", 0, follow=False))
    return time.perf_counter() - t0, count


def client_events(agent: HttpAgent, job_id: str) -> tuple[float, int]:
    client = _client(agent)
    t0 = time.perf_counter()
    count = sum(1 for _ in client.events(job_id, 0, follow=False))
    return time.perf_counter() - t0, count


def client_follower(agent: HttpAgent, expected: Expected, job_id: str) -> tuple[float, int, int]:
    from joblet_nb.core.stream import JobFollower

    client, sink = _client(agent), Sink(expected)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sink):
        JobFollower(client, job_id).history()
    return (time.perf_counter() - t0, *sink.result())


def measure(agent: HttpAgent, target_bytes: int, holder_read: int) -> dict[str, Any]:
    """Every stage once, on `seq 1 N` of about target_bytes; the checked ones must be exact."""
    n = seq_for(target_bytes)
    with Expected(n) as expected:
        return _measure(agent, expected, n, holder_read)


def _measure(agent: HttpAgent, expected: Expected, n: int, holder_read: int) -> dict[str, Any]:
    want = expected.want
    size = want[0]
    rates: dict[str, float] = {}
    notes: dict[str, Any] = {"bytes": size, "seq_n": n, "holder_read": holder_read}

    def rate(name: str, elapsed: float) -> None:
        rates[name] = size / elapsed / 1e6

    for label, read, pipe in ((f"seq pipe, {holder_read >> 10} KiB reads", holder_read, 0),
                              ("seq pipe, 1 MiB reads, 1 MiB pipe", 1 << 20, 1 << 20)):
        elapsed, got, crc = seq_pipe(n, read, pipe)
        _check(label, (got, crc), want)
        rate(label, elapsed)
    sample = _sample(n)
    elapsed, notes["log_bytes_replayed"] = holder_translate(size, holder_read, sample)
    rate("holder translate", elapsed)
    notes["cpu_s_per_gb_by_pass"] = byte_passes(holder_read, sample)
    cpu: dict[str, dict[str, float]] = {}
    with CpuShares(agent) as shares:
        elapsed, job_id = job_to_log(agent, n)
    rate("job to log", elapsed)
    cpu["job to log"] = shares.per_gb(size)
    try:
        from joblet_agent.paths import AgentPaths

        log_path = AgentPaths.at(agent.root).job_state / job_id / "events.ndjson"
        notes["log_bytes"] = log_path.stat().st_size
        elapsed, _ = agent_log_read(log_path)
        rate("agent log read", elapsed)
        elapsed, notes["http_bytes"] = http_ended(agent, job_id)
        rate("HTTP, ended log", elapsed)
        elapsed, notes["events"] = client_parse(agent, job_id)
        rate("client parse", elapsed)
        elapsed, _ = client_events(agent, job_id)
        rate("client events", elapsed)
        elapsed, got, crc = client_follower(agent, expected, job_id)
        _check("client follower", (got, crc), want)
        rate("client follower", elapsed)
    finally:
        agent.delete(job_id)
    with CpuShares(agent) as shares:
        elapsed, parts = raw_stream(agent, n)
    _check("raw stream", _stdout_of(parts), want)
    del parts
    rate("end to end: raw stream", elapsed)
    cpu["end to end: raw stream"] = shares.per_gb(size)
    with CpuShares(agent) as shares:
        elapsed, got, crc = via_notebook_client(agent, expected, n)
    _check("notebook client", (got, crc), want)
    rate("end to end: notebook client", elapsed)
    cpu["end to end: notebook client"] = shares.per_gb(size)
    return {"mb_per_s": rates, "cpu_s_per_gb": cpu, **notes}


def _check(name: str, got: tuple[int, int], want: tuple[int, int]) -> None:
    relay.check(f"stage {name}", got, want)

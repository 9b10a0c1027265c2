"""A job's stdout, about 1 GB of numbered lines (`seq 1 N`), from the job to a reader; every byte
is checked (length and CRC-32 of the whole stream against `seq 1 N` run here), so a lost, repeated
or reordered byte fails the run.

Rows:
  notebook client   the notebook side's own reader: JobletClient.events() under JobFollower, which
                    writes each stdout event to sys.stdout (here a checksumming sink);
  raw stream        the agent's event stream read with http.client (NDJSON bytes, not parsed):
                    what the agent delivers, without the client's JSON decoding;
  bwrap pipe        the reference: `seq 1 N` in bwrap, its stdout a pipe read here in 1 MB reads.
Each time runs from the start (POST or Popen) to the end of the job's output (exit event or EOF).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import time
import zlib
from typing import Any

from .agent import HttpAgent
from .bwrap import bwrap

READ = 1 << 20


def seq_bytes(n: int) -> int:
    """The length of `seq 1 n`'s output."""
    total, digits, low = 0, 1, 1
    while low <= n:
        high = min(n, low * 10 - 1)
        total += (high - low + 1) * (digits + 1)
        digits, low = digits + 1, low * 10
    return total


def seq_for(target_bytes: int) -> int:
    """The smallest n whose `seq 1 n` is at least target_bytes long."""
    lo, hi = 1, max(2, target_bytes)
    while lo < hi:
        mid = (lo + hi) // 2
        if seq_bytes(mid) >= target_bytes:
            hi = mid
        else:
            lo = mid + 1
    return lo


def expected(n: int) -> tuple[int, int]:
    """(length, CRC-32) of `seq 1 n`, read from the real command."""
    proc = subprocess.Popen(["seq", "1", str(n)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    size, crc = 0, 0
    while chunk := proc.stdout.read(READ):
        size += len(chunk)
        crc = zlib.crc32(chunk, crc)
    proc.wait()
    return size, crc


class Sink(io.TextIOBase):
    """sys.stdout for JobFollower: counts and checksums what is written."""

    def __init__(self) -> None:
        self.size = 0
        self.crc = 0

    def write(self, text: str) -> int:
        data = text.encode()
        self.size += len(data)
        self.crc = zlib.crc32(data, self.crc)
        return len(text)

    def flush(self) -> None:
        pass


def via_notebook_client(agent: HttpAgent, n: int) -> tuple[float, int, int]:
    from joblet_nb.core.client import JobletClient
    from joblet_nb.core.request import JobRequest
    from joblet_nb.core.stream import JobFollower

    client = JobletClient(agent.url, agent.token, timeout=300, stream_timeout=300)
    sink = Sink()
    t0 = time.perf_counter()
    job_id = client.run_job(JobRequest(command=["seq", "1", str(n)])).id
    with contextlib.redirect_stdout(sink):
        result = JobFollower(client, job_id).follow()
    elapsed = time.perf_counter() - t0
    if not result.ok:
        raise RuntimeError(f"relay job {job_id}: {result.record}: {result.stderr_tail[-500:]}")
    agent.delete(job_id)
    return elapsed, sink.size, sink.crc


def raw_stream(agent: HttpAgent, n: int) -> tuple[str, float, list[bytes]]:
    """(job id, seconds, the event stream's bytes as read) of one `seq` job followed over HTTP."""
    conn = agent.connection()
    t0 = time.perf_counter()
    job_id = agent.submit(["seq", "1", str(n)], conn=conn)
    conn.request("GET", f"/v1/jobs/{job_id}/events?follow=true",
                 headers={"Authorization": f"Bearer {agent.token}"})
    resp = conn.getresponse()
    parts = []
    while chunk := resp.read(READ):
        parts.append(chunk)
    elapsed = time.perf_counter() - t0
    conn.close()
    return job_id, elapsed, parts


def via_raw_stream(agent: HttpAgent, n: int) -> tuple[float, int, int]:
    """The stdout bytes are taken out of the NDJSON lines only after the clock stops."""
    job_id, elapsed, parts = raw_stream(agent, n)
    size, crc, end = 0, 0, {}
    for line in b"".join(parts).splitlines():
        event = json.loads(line)
        if event["type"] == "stdout":
            data = event["data"].encode()
            size += len(data)
            crc = zlib.crc32(data, crc)
        end = event
    if end.get("status") != "COMPLETED":
        raise RuntimeError(f"relay job {job_id} (raw): {end}")
    agent.delete(job_id)
    return elapsed, size, crc


def via_bwrap(n: int) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(bwrap(["seq", "1", str(n)]), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    size, crc = 0, 0
    while chunk := os.read(fd, READ):
        size += len(chunk)
        crc = zlib.crc32(chunk, crc)
    if proc.wait():
        raise RuntimeError(f"bwrap seq exited with {proc.returncode}")
    return time.perf_counter() - t0, size, crc


ROWS = {"notebook client": via_notebook_client, "raw stream": via_raw_stream}


def measure(agent: HttpAgent, target_bytes: int, rounds: int) -> dict[str, Any]:
    """MB/s of every row over `rounds` rounds (order rotating); every run's bytes checked."""
    n = seq_for(target_bytes)
    want = expected(n)
    names = ["notebook client", "raw stream", "bwrap pipe"]
    rates: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            elapsed, size, crc = via_bwrap(n) if name == "bwrap pipe" else ROWS[name](agent, n)
            if (size, crc) != want:
                raise RuntimeError(f"relay {name}: got {size} bytes, CRC {crc:#x}; want {want[0]} bytes, "
                                   f"CRC {want[1]:#x}: bytes were lost, repeated or reordered")
            rates[name].append(size / elapsed / 1e6)
    return {"bytes": want[0], "seq_n": n, "rounds": rounds, "mb_per_s": rates}

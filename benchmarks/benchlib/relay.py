"""A job's stdout, about 1 GB of numbered lines (`seq 1 N`), from the job to a reader; every byte
is checked against `seq 1 N` run here (its length and CRC-32; the notebook client's sink compares
each write with the same bytes of a copy of that output, in order), so a lost, repeated or
reordered byte fails the run.

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
import mmap
import os
import shutil
import subprocess
import tempfile
import time
import zlib
from typing import Any

from .agent import HttpAgent
from .bwrap import bwrap
from .common import PREFIX

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


class Expected:
    """`seq 1 n`'s output from the real command: its length and CRC-32 (`want`), and a copy in a
    file of its own, mapped, that a Sink compares with; both go with `close()`."""

    def __init__(self, n: int) -> None:
        self.folder = tempfile.mkdtemp(prefix=PREFIX + "relay-")
        self.path = os.path.join(self.folder, "seq")
        with open(self.path, "wb") as out:
            subprocess.run(["seq", "1", str(n)], stdout=out, check=True)
        size, crc = 0, 0
        with open(self.path, "rb", buffering=0) as f:
            while chunk := f.read(READ):
                size += len(chunk)
                crc = zlib.crc32(chunk, crc)
        self.want = (size, crc)
        with open(self.path, "rb") as f:  # mapped once, outside any row's clock and CPU count
            self.mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ,
                                    flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))

    def close(self) -> None:
        self.mapped.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Expected":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Sink(io.TextIOBase):
    """sys.stdout for JobFollower: each write is compared with the next bytes of the expected
    output, in its copy mapped into memory (a bounded find, memcmp in place: no read, no new
    buffer), where a CRC-32 of every byte cost the client 0.4-0.5 CPU-s per GB, a third of the
    notebook side's own work."""

    def __init__(self, expected: Expected) -> None:
        self.size = 0
        self.matched = True
        self.expected = expected
        self.copy = expected.mapped

    def write(self, text: str) -> int:
        data = text.encode()
        at, self.size = self.size, self.size + len(data)
        if self.matched and data and self.copy.find(data, at, self.size) != at:
            self.matched = False
        return len(text)

    def flush(self) -> None:
        pass

    def result(self) -> tuple[int, int]:
        """(bytes written, the expected CRC-32 if each was the expected byte in its place, else -1)."""
        return self.size, self.expected.want[1] if self.matched else -1


def via_notebook_client(agent: HttpAgent, expected: Expected, n: int) -> tuple[float, int, int]:
    from joblet_nb.core.client import JobletClient
    from joblet_nb.core.request import JobRequest
    from joblet_nb.core.stream import JobFollower

    client = JobletClient(agent.url, agent.token, timeout=300, stream_timeout=300)
    sink = Sink(expected)
    t0 = time.perf_counter()
    job_id = client.run_job(JobRequest(command=["seq", "1", str(n)])).id
    with contextlib.redirect_stdout(sink):
        result = JobFollower(client, job_id).follow()
    elapsed = time.perf_counter() - t0
    if not result.ok:
        raise RuntimeError(f"relay job {job_id}: {result.record}: {result.stderr_tail[-500:]}")
    agent.delete(job_id)
    return (elapsed, *sink.result())


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


def via_raw_stream(agent: HttpAgent, expected: Expected, n: int) -> tuple[float, int, int]:
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
    names = ["notebook client", "raw stream", "bwrap pipe"]
    rates: dict[str, list[float]] = {name: [] for name in names}
    with Expected(n) as expected:
        want = expected.want
        for i in range(rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:
                elapsed, size, crc = ROWS[name](agent, expected, n) if name in ROWS else via_bwrap(n)
                check(name, (size, crc), want)
                rates[name].append(size / elapsed / 1e6)
    return {"bytes": want[0], "seq_n": n, "rounds": rounds, "mb_per_s": rates}


def check(name: str, got: tuple[int, int], want: tuple[int, int]) -> None:
    if got != want:
        raise RuntimeError(f"relay {name}: got {got[0]} bytes, CRC {got[1]:#x} (-1: a byte differed from the "
                           f"expected one in its place); want {want[0]} bytes, CRC {want[1]:#x}: bytes were lost, "
                           f"repeated or reordered")

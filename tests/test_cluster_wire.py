"""The agent<->node wire format: a signed spec on the way in, bounded and checked frames on the
way out (unit tests; tests/test_cluster_trust.py attacks the node side through a real Slurm)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from joblet_agent.cluster import signing, wire

KEY = os.urandom(32)


def test_a_signed_spec_reads_back_and_leaves_what_follows_it():
    stream = io.BytesIO(wire.envelope(KEY, {"slurm_job_name": "jnb-x", "n": 1}) + b"session input\n")
    assert wire.read_envelope(stream, KEY) == {"slurm_job_name": "jnb-x", "n": 1}
    assert stream.read() == b"session input\n"


@pytest.mark.parametrize("data, why", [
    (b"", "no spec header"),
    (b"x" * 600, "no spec header"),
    (b'{"v": 1, "bytes": 5}\n', "not valid"),
    (b'{"v": 2, "bytes": 5, "mac": "00"}\nhello', "unsupported"),
    (b'{"v": 1, "bytes": 99, "mac": "00"}\nshort', "ended 94 bytes early"),
])
def test_a_malformed_envelope_is_refused(data, why):
    with pytest.raises(wire.SpecRefused, match=why):
        wire.read_envelope(io.BytesIO(data), KEY)


def test_frames_split_across_reads_come_out_whole():
    reader = wire.FrameReader()
    data = wire.frame("out", s="stdout", d="hé\n") + wire.frame("status", event={"event": "running"})
    got = [f for i in range(len(data)) for f in reader.feed(data[i:i + 1])]
    assert [f["k"] for f in got] == ["out", "status"] and got[0]["d"] == "hé\n"


def test_a_line_without_end_is_bounded():
    reader = wire.FrameReader()
    with pytest.raises(wire.FrameError, match="longer than"):
        for _ in range(wire.MAX_FRAME // 4096 + 2):
            reader.feed(b"x" * 4096)


@pytest.mark.parametrize("line, why", [
    (b"not json", "not JSON"),
    (b'["k", "out"]', "unknown kind"),
    (b'{"k": "exec", "argv": ["sh"]}', "unknown kind"),
    (b'{"k": "out", "s": "stdout"}', "valid 'd'"),
    (b'{"k": "out", "s": "/etc/passwd", "d": "x"}', "unknown stream"),
    (b'{"k": "file", "p": "a", "m": true, "d": "", "end": true}', "valid 'm'"),
    (b'{"k": "end", "usage": {}, "oom": false, "stop": "reboot"}', "unknown stop"),
])
def test_frames_of_unknown_kind_or_shape_are_refused(line, why):
    with pytest.raises(wire.FrameError, match=why):
        wire.FrameReader().feed(line + b"\n")


def test_the_mac_covers_every_byte_and_only_this_use():
    body = b'{"a":1}'
    mac = signing.sign(KEY, body)
    assert signing.verify(KEY, body, mac)
    assert not signing.verify(KEY, b'{"a":2}', mac)
    assert not signing.verify(os.urandom(32), body, mac)
    assert mac != __import__("hmac").new(KEY, body, "sha256").hexdigest()  # domain-separated


# ---- a lying node: /work files whose names or sizes try to leave the job's folder ------------------

def _file(path: str, data: bytes = b"x", mode: int = 0o644, end: bool = True) -> dict:
    import base64

    return {"k": "file", "p": path, "m": mode, "d": base64.b64encode(data).decode(), "end": end}


@pytest.mark.parametrize("name", ["../escaped", "/etc/jnb-escaped", "a/../../escaped", "link/escaped", "", "."])
def test_a_node_cannot_write_a_file_outside_the_jobs_folder(tmp_path, name):
    from joblet_agent.cluster.slurm_job import FileReceiver

    work = tmp_path / "work"
    work.mkdir()
    (work / "link").symlink_to(tmp_path)
    receiver = FileReceiver(str(work), 1 << 20)
    receiver.take(_file(name))
    assert receiver.problem and "refused" in receiver.problem, receiver.problem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and not Path("/etc/jnb-escaped").exists()
    assert [p.name for p in work.iterdir()] == ["link"]
    receiver.take(_file("fine.txt"))  # after a lie, nothing more is taken from that node
    assert not (work / "fine.txt").exists()


def test_a_node_cannot_send_more_than_the_jobs_disk_or_a_setuid_file(tmp_path):
    from joblet_agent.cluster.slurm_job import FileReceiver

    receiver = FileReceiver(str(tmp_path), 10)
    receiver.take(_file("tool", b"12345", mode=0o4777))
    assert (tmp_path / "tool").stat().st_mode & 0o7777 == 0o755, "no setuid, setgid, sticky or group/other write"
    receiver.take(_file("big", b"123456"))
    assert receiver.problem and "more than the job's 10 bytes" in receiver.problem
    receiver.close()

"""The agent<->node wire format: a signed spec on the way in, bounded and checked frames on the
way out (unit tests; tests/test_cluster_trust.py attacks the node side through a real Slurm)."""

from __future__ import annotations

import io
import os

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

"""A waiting stage decodes a spec like its job's ahead (launcher._rehearse), so that the pages the
decoding writes are copied before the job comes; the job's own spec is read from its memfd whole.
No timing claims (benchmarks/goals.py --only lifecycle times the hand-over)."""

from __future__ import annotations

import json
import os

from joblet_agent.sandbox import launcher
from joblet_agent.sandbox.spec import SandboxSpec, WorkFile


def test_the_rehearsal_decodes_a_spec_shaped_like_a_jobs_without_failing() -> None:
    """The rehearsal swallows its failures (it must never fail a stage): one that failed every
    time would rehearse nothing, so it is run here as it runs in a stage."""
    launcher.REHEARSAL = json.dumps(launcher._rehearsal_spec().to_json_dict()).encode()
    spec = launcher.rehearsal()
    assert spec == launcher._rehearsal_spec()
    assert spec.mounts and spec.env and spec.etc_files and spec.cgroup_limits.devices


def test_a_spec_larger_than_a_read_is_read_whole_from_its_memfd() -> None:
    spec = launcher._rehearsal_spec()
    spec.uploads = [WorkFile(f"f{i}", os.urandom(300_000)) for i in range(8)]  # ~4.8 MB of hex
    fd = os.memfd_create("jnb-test-spec", os.MFD_CLOEXEC)
    try:
        os.write(fd, json.dumps(spec.to_json_dict()).encode())
        assert launcher._read_spec(fd) == spec
        assert os.lseek(fd, 0, os.SEEK_CUR) > 0  # the position it was left at is not where reading starts
    finally:
        os.close(fd)


def test_an_empty_spec_is_refused_with_an_exception() -> None:
    fd = os.memfd_create("jnb-test-spec", os.MFD_CLOEXEC)
    try:
        try:
            launcher._read_spec(fd)
        except ValueError:
            return
        raise AssertionError("an empty memfd gave a spec")
    finally:
        os.close(fd)

"""Root never follows a path a job could have planted: uploads, downloads and the /work copy-out."""

from __future__ import annotations

import os
import stat

import pytest

from joblet_agent.sandbox import safefs


@pytest.mark.parametrize("bad", ["/etc/passwd", "", "..", "a/../../b", "../x", "\x00"])
def test_relative_paths_only(bad):
    with pytest.raises(safefs.UnsafePath):
        safefs.split_relative(bad)


def test_write_beneath_does_not_follow_a_planted_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "work"
    root.mkdir()
    (root / "dir").symlink_to(outside)
    (root / "file").symlink_to(outside / "target")
    with pytest.raises(OSError):
        safefs.write_beneath(str(root), "dir/x", b"data")
    with pytest.raises(OSError):
        safefs.write_beneath(str(root), "file", b"data")
    assert list(outside.iterdir()) == []


def test_write_beneath_creates_folders_with_owner_and_mode(tmp_path):
    safefs.write_beneath(str(tmp_path), "a/b/c.sh", b"#!/bin/sh\n", 0o755, owner=(1234, 1234))
    st = os.stat(tmp_path / "a/b/c.sh")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, 1234)
    assert os.stat(tmp_path / "a").st_uid == 1234


def test_open_beneath_refuses_symlinks_anywhere_on_the_path(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("ok")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "flink").symlink_to("/etc/passwd")
    os.close(safefs.open_beneath(str(tmp_path), "real/f"))
    for bad in ("link/f", "flink"):
        with pytest.raises(OSError):
            safefs.open_beneath(str(tmp_path), bad)


def test_copy_tree_skips_symlinks_devices_and_setuid_bits(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("content")
    (src / "suid").write_text("x")
    os.chmod(src / "suid", 0o4755)
    (src / "link").symlink_to("/etc/shadow")
    os.mkfifo(src / "fifo")
    copied = safefs.copy_tree(str(src), str(dst))
    assert copied == len("content") + 1
    assert sorted(os.listdir(dst)) == ["d", "suid"]
    assert stat.S_IMODE(os.stat(dst / "suid").st_mode) == 0o755
    assert (dst / "d" / "f").read_text() == "content"

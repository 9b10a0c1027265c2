"""Root never follows a path a job could have planted: uploads, downloads and the /work copy-out."""

from __future__ import annotations

import os
import stat

import pytest

from joblet_agent import fs as safefs


@pytest.mark.parametrize("bad", ["/etc/passwd", "", "..", "a/../../b", "../x", "\x00"])
def test_relative_paths_only(bad):
    with pytest.raises(safefs.UnsafePath):
        safefs.split_relative(bad)


def _create(root: str, path: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    os.close(safefs.create_beneath(root, path, mode, owner))


def test_create_beneath_does_not_follow_a_planted_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "work"
    root.mkdir()
    (root / "dir").symlink_to(outside)
    (root / "file").symlink_to(outside / "target")
    with pytest.raises(OSError):
        _create(str(root), "dir/x")
    with pytest.raises(OSError):
        _create(str(root), "file")
    assert list(outside.iterdir()) == []


@pytest.mark.root
def test_create_beneath_creates_folders_with_owner_and_mode(tmp_path):
    _create(str(tmp_path), "a/b/c.sh", 0o755, owner=(1234, 1234))
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
    report = safefs.copy_tree(str(src), str(dst))
    assert (report.copied, report.skipped) == (len("content") + 1, [])
    assert sorted(os.listdir(dst)) == ["d", "suid"]
    assert stat.S_IMODE(os.stat(dst / "suid").st_mode) == 0o755
    assert (dst / "d" / "f").read_text() == "content"


def test_copy_tree_of_an_empty_folder_makes_nothing(tmp_path):
    """A job that left /work empty costs its folder no inode (its listing is empty: test_api_files)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    report = safefs.copy_tree(str(src), str(dst))
    assert (report.files, report.dirs, report.copied) == (0, 0, 0)
    assert not dst.exists()


def test_copy_tree_is_bounded_in_bytes_and_depth_without_recursion(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.truncate(64 << 20)  # costs the job nothing, would cost the host 64 MiB
    (src / "small").write_bytes(b"x" * 100)
    _make_deep(src, 3000)  # deeper than Python's recursion limit and than PATH_MAX
    report = safefs.copy_tree(str(src), str(dst), limit_bytes=1 << 20, max_depth=8)
    safefs.remove_tree(str(src))
    assert report.copied == 100
    assert any(s.startswith("sparse:") for s in report.skipped)
    assert any("deeper than 8" in s for s in report.skipped)
    assert not (dst / "sparse").exists()


def test_remove_tree_handles_deep_trees_and_never_follows_links(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep")
    top = tmp_path / "tree"
    top.mkdir()
    _make_deep(top, 3000)
    (top / "link").symlink_to(victim)
    safefs.remove_tree(str(top))
    assert not top.exists()
    assert (victim / "keep").read_text() == "keep"


def _make_deep(top, levels: int) -> None:
    """A chain of `levels` folders with a file at the bottom, made relative to descriptors."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(levels):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    os.close(fd)

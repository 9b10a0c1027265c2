"""The mount helpers on the real kernel, each in a throw-away mount namespace of a forked child, so
nothing can reach the host's mount table even when a helper is wrong."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable

import pytest

from joblet_agent.sandbox import libc, mounts


def in_private_mount_namespace(check: Callable[[str], None]) -> None:
    """Run `check(workdir)` in a child with its own private mount namespace; re-raise its failure."""
    work = tempfile.mkdtemp(prefix="jnb-test-mnt-")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        message = b""
        try:
            libc.unshare(libc.CLONE_NEWNS)
            mounts.make_private()
            check(work)
        except BaseException as exc:  # noqa: BLE001
            message = repr(exc).encode() or b"failed"
        finally:
            os.write(write, message)
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        message = f.read()
    os.waitpid(pid, 0)
    os.rmdir(work) if not os.listdir(work) else _rm(work)
    assert not message, message.decode()


def _rm(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.root
def test_readonly_bind_makes_every_submount_readonly_nosuid_nodev():
    def check(work: str) -> None:
        src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
        os.makedirs(os.path.join(src, "sub"))
        os.mkdir(dst)
        mounts.mount_tmpfs(src, 1)
        os.mkdir(os.path.join(src, "sub"))
        mounts.mount_tmpfs(os.path.join(src, "sub"), 1)  # a submount, writable on the source side
        mounts.bind(src, dst, readonly=True, table=mounts.MountTable())  # the table sees the submount
        found = mounts.mounts_under(dst)
        assert len(found) == 2, found
        for point, options in found:
            assert {"ro", "nosuid", "nodev"} <= options, (point, options)
        for path in (dst, os.path.join(dst, "sub")):
            try:
                os.close(os.open(os.path.join(path, "x"), os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as exc:
                assert exc.errno == errno.EROFS, exc
            else:
                raise AssertionError(f"{path} is writable")

    in_private_mount_namespace(check)


@pytest.mark.root
def test_bind_without_submounts_keeps_noexec_of_its_source():
    def check(work: str) -> None:
        src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
        os.mkdir(src)
        os.mkdir(dst)
        mounts.mount_tmpfs(src, 1, flags=libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
        os.mkdir(os.path.join(src, "inner"))
        table = mounts.MountTable()
        assert not table.has_submounts(os.path.join(src, "inner"))
        mounts.bind(os.path.join(src, "inner"), dst, readonly=True, table=table)
        (_, options), = mounts.mounts_under(dst)
        assert {"ro", "nosuid", "nodev", "noexec"} <= options, options

    in_private_mount_namespace(check)


@pytest.mark.root
def test_writable_bind_is_still_nosuid_nodev():
    def check(work: str) -> None:
        src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
        os.mkdir(src)
        os.mkdir(dst)
        mounts.mount_tmpfs(src, 1)
        mounts.bind(src, dst, readonly=False)
        (_, options), = mounts.mounts_under(dst)
        assert {"rw", "nosuid", "nodev"} <= options, options

    in_private_mount_namespace(check)


@pytest.mark.root
def test_mkdirs_beneath_refuses_symlinks_and_dotdot():
    def check(work: str) -> None:
        os.symlink("/etc", os.path.join(work, "link"))
        for bad in ("link/x", "a/../../x"):
            try:
                mounts.mkdirs_beneath(work, bad)
            except (OSError, ValueError):
                continue
            raise AssertionError(f"{bad} was followed")
        assert not os.path.exists("/etc/x")

    in_private_mount_namespace(check)


def test_mountinfo_unescapes_spaces():
    assert mounts.unescape("/a\\040b") == "/a b"
    assert mounts.unescape("/plain") == "/plain"

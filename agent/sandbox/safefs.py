"""Path handling for directories a job could write: never resolve them by string as root.

runc's CVEs teach that a root process following a path inside a sandbox-writable tree can be led
anywhere by a planted symlink. Every function here walks one component at a time from a directory
descriptor with O_NOFOLLOW, and copies only regular files and directories.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(ValueError):
    """A relative path that is absolute, empty, or climbs out with '..'."""


def split_relative(path: str) -> list[str]:
    """The components of a job-relative path; refuses absolute paths, '..' and empty names."""
    if not path or path.startswith("/") or "\x00" in path:
        raise UnsafePath(f"path {path!r} must be relative to /work and non-empty")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise UnsafePath(f"path {path!r} must not contain '..'")
    return parts


def _walk_dirs(root_fd: int, parts: list[str], create: bool, mode: int = 0o755,
               owner: tuple[int, int] | None = None) -> int:
    fd = os.dup(root_fd)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                    if owner:
                        os.chown(part, *owner, dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    pass
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def write_beneath(root: str, path: str, content: bytes, mode: int = 0o644,
                  owner: tuple[int, int] | None = None) -> None:
    """Create `root/path` (new file only) without following any symlink on the way."""
    parts = split_relative(path)
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        dir_fd = _walk_dirs(root_fd, parts[:-1], create=True, owner=owner)
    finally:
        os.close(root_fd)
    try:
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode & 0o777, dir_fd=dir_fd)
        try:
            os.write(fd, content) if len(content) < (1 << 20) else _write_all(fd, content)
            os.fchmod(fd, mode & 0o777)
            if owner:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view):]


def open_beneath(root: str, path: str) -> int:
    """Open `root/path` for reading as a regular file, refusing symlinks anywhere on the path."""
    parts = split_relative(path)
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        dir_fd = _walk_dirs(root_fd, parts[:-1], create=False)
    finally:
        os.close(root_fd)
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(f"{path} is not a regular file")
    return fd


def copy_tree(src: str, dst: str, limit_bytes: int | None = None) -> int:
    """Copy regular files and directories from `src` to a new `dst`, skipping symlinks, devices,
    fifos and sockets, and stripping setuid/setgid bits. Returns the bytes copied."""
    os.makedirs(dst, mode=0o700, exist_ok=True)
    src_fd = os.open(src, _DIR_FLAGS)
    dst_fd = os.open(dst, _DIR_FLAGS)
    try:
        return _copy_dir(src_fd, dst_fd, limit_bytes)
    finally:
        os.close(src_fd)
        os.close(dst_fd)


def _copy_dir(src_fd: int, dst_fd: int, budget: int | None) -> int:
    total = 0
    for entry in _entries(src_fd):
        st = os.stat(entry, dir_fd=src_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(entry, 0o700, dir_fd=dst_fd)
            s = os.open(entry, _DIR_FLAGS, dir_fd=src_fd)
            d = os.open(entry, _DIR_FLAGS, dir_fd=dst_fd)
            try:
                total += _copy_dir(s, d, None if budget is None else budget - total)
            finally:
                os.close(s)
                os.close(d)
        elif stat.S_ISREG(st.st_mode):
            total += _copy_file(src_fd, dst_fd, entry, st.st_mode & 0o755)
        if budget is not None and total > budget:
            break
    return total


def _entries(dir_fd: int) -> Iterator[str]:
    with os.scandir(dir_fd) as it:
        for entry in it:
            yield entry.name


def _copy_file(src_dir: int, dst_dir: int, name: str, mode: int) -> int:
    s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=src_dir)
    try:
        if not stat.S_ISREG(os.fstat(s).st_mode):
            return 0
        d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                    dir_fd=dst_dir)
        try:
            return _copy_fd(s, d)
        finally:
            os.close(d)
    finally:
        os.close(s)


def _copy_fd(src: int, dst: int) -> int:
    total = 0
    while True:
        try:
            n = os.copy_file_range(src, dst, 1 << 24)
        except OSError:
            n = _write_chunk(src, dst)
        if n == 0:
            return total
        total += n


def _write_chunk(src: int, dst: int) -> int:
    data = os.read(src, 1 << 20)
    _write_all(dst, data)
    return len(data)

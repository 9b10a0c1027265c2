"""Path handling for directories a job could write: never resolve them by string as root.

runc's CVEs teach that a root process following a path inside a sandbox-writable tree can be led
anywhere by a planted symlink. Every function here walks one component at a time from a directory
descriptor with O_NOFOLLOW, and copies only regular files and directories.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

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


def open_dir_beneath(root: str, relative: str) -> int:
    """A directory descriptor for `root/relative` ("" is `root` itself), refusing symlinks and
    '..' on every component."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafePath(f"path {relative!r} must not contain '..'")
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        return _walk_dirs(root_fd, parts, create=False)
    finally:
        os.close(root_fd)


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


MAX_DEPTH = 64


@dataclass
class CopyReport:
    """What a copy-out did: bytes written, and what it left behind on purpose (and why)."""

    copied: int = 0
    skipped: list[str] = field(default_factory=list)


def copy_tree(src: str, dst: str, limit_bytes: int | None = None, max_depth: int = MAX_DEPTH) -> CopyReport:
    """Copy regular files and directories from `src` to a new `dst`, skipping symlinks, devices,
    fifos and sockets, and stripping setuid/setgid bits.

    The job controls `src`, so the copy is bounded the way the job's own disk was: at most
    `limit_bytes` written in all (a sparse file that cost the job nothing is measured by its size,
    and skipped if it does not fit), at most `max_depth` folders deep, without recursion.
    """
    report = CopyReport()
    os.makedirs(dst, mode=0o700, exist_ok=True)
    stack = [(os.open(src, _DIR_FLAGS), os.open(dst, _DIR_FLAGS), "", 0)]
    try:
        while stack:
            src_fd, dst_fd, where, depth = stack.pop()
            try:
                for name in _entries(src_fd):
                    path = f"{where}{name}"
                    st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        if depth + 1 > max_depth:
                            report.skipped.append(f"{path}/: deeper than {max_depth} folders")
                            continue
                        os.mkdir(name, 0o700, dir_fd=dst_fd)
                        stack.append((os.open(name, _DIR_FLAGS, dir_fd=src_fd),
                                      os.open(name, _DIR_FLAGS, dir_fd=dst_fd), path + "/", depth + 1))
                    elif stat.S_ISREG(st.st_mode):
                        left = None if limit_bytes is None else limit_bytes - report.copied
                        if left is not None and st.st_size > left:
                            report.skipped.append(f"{path}: {st.st_size} bytes, over the job's disk limit")
                            continue
                        report.copied += _copy_file(src_fd, dst_fd, name, st.st_mode & 0o755, left)
            finally:
                os.close(src_fd)
                os.close(dst_fd)
    finally:
        for src_fd, dst_fd, _, _ in stack:
            os.close(src_fd)
            os.close(dst_fd)
    return report


def remove_tree(path: str) -> None:
    """Remove a folder tree bottom-up without recursion and without following symlinks (a job's
    files can nest deeper than any recursive walk allows)."""
    try:
        top = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return
    stack: list[tuple[int, str]] = [(top, path)]
    try:
        while stack:
            fd, name = stack[-1]
            sub = _unlink_files_until_subdir(fd)
            if sub is not None:
                stack.append(sub)
                continue
            stack.pop()
            os.close(fd)
            if stack:
                os.rmdir(name, dir_fd=stack[-1][0])
    finally:
        for fd, _ in stack:
            os.close(fd)
    os.rmdir(path)


def _unlink_files_until_subdir(dir_fd: int) -> tuple[int, str] | None:
    """Unlink non-folders in `dir_fd`; return the first sub-folder (opened) if there is one."""
    for name in _entries(dir_fd):
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd), name
        os.unlink(name, dir_fd=dir_fd)
    return None


def _entries(dir_fd: int) -> Iterator[str]:
    with os.scandir(dir_fd) as it:
        for entry in it:
            yield entry.name


def _copy_file(src_dir: int, dst_dir: int, name: str, mode: int, left: int | None) -> int:
    s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=src_dir)
    try:
        if not stat.S_ISREG(os.fstat(s).st_mode):
            return 0
        d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                    dir_fd=dst_dir)
        try:
            return _copy_fd(s, d, left)
        finally:
            os.close(d)
    finally:
        os.close(s)


def _copy_fd(src: int, dst: int, left: int | None) -> int:
    """Copy until EOF or until `left` bytes are written (a file can grow while it is copied)."""
    total = 0
    while left is None or total < left:
        chunk = 1 << 20 if left is None else min(1 << 20, left - total)
        try:
            n = os.copy_file_range(src, dst, chunk)
        except OSError:
            n = _write_chunk(src, dst, chunk)
        if n == 0:
            break
        total += n
    return total


def _write_chunk(src: int, dst: int, size: int) -> int:
    data = os.read(src, size)
    _write_all(dst, data)
    return len(data)

"""Path handling for directories a job could write: never resolve them by string as root.

runc's CVEs teach that a root process following a path inside a sandbox-writable tree can be led
anywhere by a planted symlink. Every function here walks one component at a time from a directory
descriptor with O_NOFOLLOW, and copies only regular files and directories.
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
from dataclasses import dataclass, field

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""A plain name for one path component: no '/', no leading dot, at most 128 characters."""


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
            nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


_libc = ctypes.CDLL(None, use_errno=True)
_NR_OPENAT2 = 437  # the same on x86_64 and aarch64 (the generic syscall table)
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 0x02, 0x04, 0x08
STRICT = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dir_fd: int, path: str, flags: int, resolve: int = STRICT) -> int:
    """openat2(2): `path` resolved from `dir_fd` by the kernel as `resolve` says (by default never
    above `dir_fd`, through no symlink or magic link), in one step that a concurrent rename or a
    planted link cannot redirect."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = _libc.syscall(ctypes.c_long(_NR_OPENAT2), ctypes.c_int(dir_fd), path.encode(), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{path}: {os.strerror(err)} (resolved beneath its folder, no symlink followed)")
    return fd


def open_source(base: str, relative: str) -> int:
    """An O_PATH descriptor of `base/relative`, a folder or a regular file, resolved by openat2
    beneath `base` with no symlink anywhere on the way: what a bind mount of a tree another party
    wrote (a runtime's `isolated/`) is made from, so that it binds exactly what was checked."""
    base_fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = openat2(base_fd, relative, os.O_PATH)
    finally:
        os.close(base_fd)
    if not (stat.S_ISDIR(os.fstat(fd).st_mode) or stat.S_ISREG(os.fstat(fd).st_mode)):
        os.close(fd)
        raise UnsafePath(f"{relative}: neither a folder nor a regular file")
    return fd


def open_dir_beneath(root: str, relative: str) -> int:
    """A directory descriptor for `root/relative` ("" is `root` itself), refusing symlinks and
    '..' on every component."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafePath(f"path {relative!r} must not contain '..'")
    root_fd = os.open(root, DIR_FLAGS)
    try:
        return _walk_dirs(root_fd, parts, create=False)
    finally:
        os.close(root_fd)


def create_beneath(root: str, path: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> int:
    """A descriptor open for writing on a new file `root/path` (folders on the way are made),
    without following any symlink on the way."""
    parts = split_relative(path)
    root_fd = os.open(root, DIR_FLAGS)
    try:
        dir_fd = _walk_dirs(root_fd, parts[:-1], create=True, owner=owner)
    finally:
        os.close(root_fd)
    try:
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode & 0o777, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    try:
        os.fchmod(fd, mode & 0o777)
        if owner:
            os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_first(path: os.PathLike[str] | str, data: bytes, dir_fd: int | None = None, durable: bool = False) -> None:
    """A state file's first content, in place, in one write: the file is new or an empty one
    made ahead (a spare job folder's). Not opened with O_TRUNC: on ext4 truncating a file to
    empty makes its close flush its data to the disk at once (auto_da_alloc), about a tenth
    of a millisecond of the agent's CPU per file; anything longer than `data` is cut after.
    `path` is relative to `dir_fd` if given; `durable`: fsync'd before it is closed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        write_all(fd, data)
        if os.fstat(fd).st_size > len(data):
            os.ftruncate(fd, len(data))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view):]


def open_beneath(root: str, path: str) -> int:
    """Open `root/path` for reading as a regular file, refusing symlinks anywhere on the path."""
    parts = split_relative(path)
    root_fd = os.open(root, DIR_FLAGS)
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
MAX_SKIPPED = 20  # a report names this many things it left out, and counts the rest


@dataclass(frozen=True)
class CopyRules:
    """What a copy keeps of a tree it must not trust. Setuid and setgid bits never survive."""

    keep_links: bool = False          # recreate symlinks as links (never followed); else drop them
    dir_mode: int = 0o700
    normal_modes: bool = False        # files 0755 or 0644 by their x bit; else their own bits & 0755
    limit_bytes: int | None = None    # all files together; one that does not fit is skipped
    max_depth: int | None = MAX_DEPTH
    limit_entries: int | None = None  # files and folders together; the copy stops at this many
    keep_times: bool = False          # files keep their modification time (Python's bytecode
                                      # cache is valid only beside a source of the same mtime)

    def file_mode(self, mode: int) -> int:
        if self.normal_modes:
            return 0o755 if mode & 0o111 else 0o644
        return mode & 0o755


@dataclass
class CopyReport:
    """What a copy did, and what it left out on purpose (and why)."""

    copied: int = 0                                      # bytes
    files: int = 0
    dirs: int = 0
    links: int = 0
    stripped: list[str] = field(default_factory=list)   # setuid/setgid bits removed
    dropped: list[str] = field(default_factory=list)    # devices, fifos, sockets (and links, unless kept)
    skipped: list[str] = field(default_factory=list)    # beyond a bound: bytes, depth, entries
    skipped_more: int = 0                                # beyond the first MAX_SKIPPED of those

    def skip(self, what: str) -> None:
        if len(self.skipped) < MAX_SKIPPED:
            self.skipped.append(what)
        else:
            self.skipped_more += 1

    def summary(self) -> str:
        text = f"{self.files} files, {self.dirs} folders, {self.links} links, {self.copied / 1e6:.1f} MB"
        if self.stripped:
            text += f"; stripped setuid/setgid from {len(self.stripped)}: {', '.join(self.stripped[:5])}"
        if self.dropped:
            text += f"; dropped {len(self.dropped)} special files: {', '.join(self.dropped[:5])}"
        return text


def copy_tree(src: str, dst: str, limit_bytes: int | None = None, max_depth: int = MAX_DEPTH,
              limit_entries: int | None = None) -> CopyReport:
    """Copy regular files and directories from `src` to a new `dst`, skipping symlinks, devices,
    fifos and sockets, and stripping setuid/setgid bits.

    The job controls `src`, so the copy is bounded the way the job's own disk was: at most
    `limit_bytes` written in all (a sparse file that cost the job nothing is measured by its size,
    and skipped if it does not fit), at most `max_depth` folders deep, without recursion, and at
    most `limit_entries` files and folders (empty files cost no bytes, but an inode each). An
    empty `src` makes no `dst` (a folder costs an inode; a reader takes a missing one as empty).
    """
    report = CopyReport()
    src_fd = os.open(src, DIR_FLAGS)
    try:
        pending = _names_to_copy(src_fd)
        if pending:
            os.makedirs(dst, mode=0o700, exist_ok=True)
            dst_fd = os.open(dst, DIR_FLAGS)
    except BaseException:
        os.close(src_fd)
        raise
    if not pending:
        os.close(src_fd)
        return report
    rules = CopyRules(limit_bytes=limit_bytes, max_depth=max_depth, limit_entries=limit_entries)
    _copy_frames([_Frame(src_fd, dst_fd, "", 0, pending)], report, rules)
    return report


def copy_entry(src_dir_fd: int, name: str, dst_dir_fd: int, report: CopyReport, rules: CopyRules,
               rel: str = "") -> None:
    """Copy entry `name` of `src_dir_fd` (a file, a folder with all below it, a link) into
    `dst_dir_fd` under the same name, by `rules`; `rel` is where it lies, for the report."""
    frame = _copy_one(src_dir_fd, dst_dir_fd, name, f"{rel}/{name}" if rel else name, 0, report, rules)
    if frame is not None:
        _copy_frames([frame], report, rules)


@dataclass
class _Frame:
    """A folder being copied: both descriptors and the names still to do. Only the folders on the
    current path are open, so a wide tree costs no more descriptors than a narrow one."""

    src: int
    dst: int
    path: str
    depth: int
    names: list[str]

    def close(self) -> None:
        os.close(self.src)
        os.close(self.dst)


class _Full(Exception):
    """The copy has made `limit_entries` files and folders."""


def _copy_frames(stack: list[_Frame], report: CopyReport, rules: CopyRules) -> None:
    try:
        _copy_until_done(stack, report, rules)
    except _Full:
        report.skip(f"the rest: over {rules.limit_entries} files and folders")
    finally:
        for frame in stack:
            frame.close()


def _copy_until_done(stack: list[_Frame], report: CopyReport, rules: CopyRules) -> None:
    while stack:
        top = stack[-1]
        if not top.names:
            os.fchmod(top.dst, rules.dir_mode)
            stack.pop().close()
            continue
        name = top.names.pop()
        path = f"{top.path}/{name}" if top.path else name
        frame = _copy_one(top.src, top.dst, name, path, top.depth, report, rules)
        if frame is not None:
            stack.append(frame)


def _copy_one(src_dir: int, dst_dir: int, name: str, path: str, depth: int, report: CopyReport,
              rules: CopyRules) -> _Frame | None:
    """Copy one entry; a folder is made and returned as the next frame to fill."""
    if rules.limit_entries is not None and report.files + report.dirs >= rules.limit_entries:
        raise _Full
    st = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISLNK(st.st_mode):
        report.stripped.append(path)
    if stat.S_ISDIR(st.st_mode):
        if rules.max_depth is not None and depth + 1 > rules.max_depth:
            report.skip(f"{path}/: deeper than {rules.max_depth} folders")
            return None
        os.mkdir(name, 0o700, dir_fd=dst_dir)
        report.dirs += 1
        src = os.open(name, DIR_FLAGS, dir_fd=src_dir)
        try:
            return _Frame(src, os.open(name, DIR_FLAGS, dir_fd=dst_dir), path, depth + 1, _names_to_copy(src))
        except BaseException:
            os.close(src)
            raise
    if stat.S_ISREG(st.st_mode):
        left = None if rules.limit_bytes is None else rules.limit_bytes - report.copied
        if left is not None and st.st_size > left:
            report.skip(f"{path}: {st.st_size} bytes, over the job's disk limit")
        elif _copy_file(src_dir, dst_dir, name, rules.file_mode(mode), left, report,
                        st if rules.keep_times else None):
            report.files += 1
        else:
            report.dropped.append(path)  # no longer a regular file when opened
    elif stat.S_ISLNK(st.st_mode) and rules.keep_links:
        os.symlink(os.readlink(name, dir_fd=src_dir), name, dir_fd=dst_dir)
        report.links += 1
    else:
        report.dropped.append(path)
    return None


def _names_to_copy(dir_fd: int) -> list[str]:
    return sorted(names(dir_fd), reverse=True)  # popped from the end: in name order


@dataclass(frozen=True)
class FileInfo:
    """A regular file `list_files` found: its path below the root, its size and permission bits."""

    path: str
    size: int
    mode: int


def list_files(root: str, limit: int) -> tuple[list[FileInfo], bool]:
    """The regular files below `root`, sorted by path, found without following any symlink (links,
    devices, fifos and sockets are not listed); at most `limit` of them, with True when more were
    left out. Only the folders on the current path are open, as in the copier."""
    found: list[FileInfo] = []
    cut = False
    fd, pending = _open_listed(root)
    stack: list[tuple[int, str, list[str]]] = [(fd, "", pending)]
    try:
        while stack:
            fd, where, pending = stack[-1]
            if not pending:
                os.close(stack.pop()[0])
                continue
            name = pending.pop()
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                sub, below = _open_listed(name, fd)
                stack.append((sub, f"{where}{name}/", below))
            elif stat.S_ISREG(st.st_mode):
                if len(found) == limit:
                    cut = True
                    break
                found.append(FileInfo(where + name, st.st_size, stat.S_IMODE(st.st_mode)))
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    return sorted(found, key=lambda f: f.path), cut


def _open_listed(name: str, dir_fd: int | None = None) -> tuple[int, list[str]]:
    """A folder's descriptor and its entry names, reversed so that popping gives name order."""
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        return fd, sorted(names(fd), reverse=True)
    except BaseException:
        os.close(fd)
        raise


def remove_tree(path: str) -> None:
    """Remove a folder tree bottom-up without recursion and without following symlinks (a job's
    files can nest deeper than any recursive walk allows)."""
    try:
        top = os.open(path, DIR_FLAGS)
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
    for name in names(dir_fd):
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return os.open(name, DIR_FLAGS, dir_fd=dir_fd), name
        os.unlink(name, dir_fd=dir_fd)
    return None


def names(dir_fd: int) -> list[str]:
    """The entry names of an open folder (in no particular order)."""
    with os.scandir(dir_fd) as it:
        return [entry.name for entry in it]


def _copy_file(src_dir: int, dst_dir: int, name: str, mode: int, left: int | None, report: CopyReport,
               times: os.stat_result | None = None) -> bool:
    s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=src_dir)
    try:
        if not stat.S_ISREG(os.fstat(s).st_mode):
            return False
        d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                    dir_fd=dst_dir)
        try:
            report.copied += _copy_fd(s, d, left)
            os.fchmod(d, mode)
            if times is not None:
                os.utime(d, ns=(times.st_atime_ns, times.st_mtime_ns))
        finally:
            os.close(d)
        return True
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
    write_all(dst, data)
    return len(data)

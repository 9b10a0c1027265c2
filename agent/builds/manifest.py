"""Runtime trees: the cleanup copy into `isolated/`, the manifest of digests, and verification.

- `copy_clean` copies what a build staged (a folder the unprivileged builder could write) into
  `isolated/` as root without ever following a path by string: one component at a time from
  directory descriptors with O_NOFOLLOW. Regular files, directories and symlinks (recreated as
  links, never followed) are kept; setuid/setgid/sticky bits and group/other write bits are
  stripped; device nodes, fifos and sockets are dropped. Everything it changed is reported.
- `write_manifest` records every entry of the published tree: type, mode, size, sha256 (files) or
  target (links), plus the stat fingerprint (inode, mtime, ctime) it had when the manifest was written.
- `verify_full` re-hashes everything (after publish and at agent start); `verify_stat` compares only
  the stat fingerprint (cheap: a walk of lstat calls), used when a tree has changed since.
- `TreeWatch` (inotify, in agent/inotify.py) says which trees changed at all, so a job start costs one read() when
  nothing did.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..fs import DIR_FLAGS, CopyReport, CopyRules, copy_entry, names
from ..inotify import TreeWatch  # noqa: F401 - the runtime trees' watch lives with inotify

MANIFEST = "manifest.json"
COVERED = ("runtime.yml", "runtime.yml.original", "isolated")


class TreeError(Exception):
    """A staged or published tree is not acceptable; the message says which entry and why."""


# files keep their mtime: a `.pyc` is used only beside a source of the mtime it recorded, so a
# runtime copied without it recompiled every module it imported in every job (ast: 1 ms -> 16 ms)
RUNTIME_COPY = CopyRules(keep_links=True, dir_mode=0o755, normal_modes=True, max_depth=None, keep_times=True)


def copy_clean(src_dir_fd: int, name: str, dst_dir_fd: int, report: CopyReport, rel: str = "") -> None:
    """Copy staged entry `name` into `isolated/` as root, by RUNTIME_COPY (see the module's
    docstring). Never follows a link."""
    copy_entry(src_dir_fd, name, dst_dir_fd, report, RUNTIME_COPY, rel)


# ---- manifest -----------------------------------------------------------------------------------


def _walk(root_fd: int, rel: str = "") -> Iterator[tuple[str, os.stat_result, int]]:
    """(relative path, lstat, parent dir fd) for every entry below root_fd, depth first, sorted."""
    for name in sorted(names(root_fd)):
        yield from _descend(root_fd, name, f"{rel}/{name}" if rel else name)


def _covered(version_fd: int) -> Iterator[tuple[str, os.stat_result, int]]:
    for name in COVERED:
        yield from _descend(version_fd, name, name)


def _descend(dir_fd: int, name: str, path: str) -> Iterator[tuple[str, os.stat_result, int]]:
    """One entry (absent is fine) and, for a folder, everything below it."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    yield path, st, dir_fd
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        try:
            yield from _walk(fd, path)
        finally:
            os.close(fd)


def _sha256(dir_fd: int, name: str) -> str:
    h = hashlib.sha256()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def _entry(path: str, st: os.stat_result, dir_fd: int, digest: bool) -> dict[str, Any]:
    name = path.rsplit("/", 1)[-1]
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        e: dict[str, Any] = {"type": "file", "mode": mode, "size": st.st_size}
        if digest:
            e["sha256"] = _sha256(dir_fd, name)
    elif stat.S_ISDIR(st.st_mode):
        e = {"type": "dir", "mode": mode}
    elif stat.S_ISLNK(st.st_mode):
        e = {"type": "link", "target": os.readlink(name, dir_fd=dir_fd)}
    else:
        raise TreeError(f"{path}: device nodes, fifos and sockets are not allowed in a runtime")
    if mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISLNK(st.st_mode):
        raise TreeError(f"{path}: setuid/setgid files are not allowed in a runtime")
    if st.st_uid != 0 and not stat.S_ISLNK(st.st_mode):
        raise TreeError(f"{path}: owned by uid {st.st_uid}, not root")
    return e


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_mode]


def write_manifest(version_dir: str) -> dict[str, Any]:
    """Hash the tree and write manifest.json (0644, root); returns it."""
    fd = os.open(version_dir, DIR_FLAGS)
    try:
        entries, stamps = {}, {}
        for path, st, dir_fd in _covered(fd):
            entries[path] = _entry(path, st, dir_fd, digest=True)
        # the stat fingerprint is taken last, after every write to the tree
        for path, st, _ in _covered(fd):
            stamps[path] = _stamp(st)
        data = {"format": 1, "entries": entries, "stamps": stamps}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        tmp = MANIFEST + ".tmp"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        with os.fdopen(out, "w") as f:
            f.write(text)
        os.rename(tmp, MANIFEST, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    return data


def manifest_digest(version_dir: str) -> str:
    return hashlib.sha256(Path(version_dir, MANIFEST).read_bytes()).hexdigest()


def load_manifest(version_dir: str) -> dict[str, Any]:
    try:
        return json.loads(Path(version_dir, MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise TreeError(f"the manifest cannot be read: {exc}") from None


def verify_full(version_dir: str, manifest: dict[str, Any]) -> None:
    """Every entry hashed and compared with the manifest; raises TreeError naming the first change."""
    fd = os.open(version_dir, DIR_FLAGS)
    try:
        expected = manifest["entries"]
        seen = set()
        for path, st, dir_fd in _covered(fd):
            seen.add(path)
            if path not in expected:
                raise TreeError(f"{path} was added after the runtime was published")
            got = _entry(path, st, dir_fd, digest=True)
            if got != expected[path]:
                what = "content" if got.get("sha256") != expected[path].get("sha256") else "type or mode"
                raise TreeError(f"{path} changed after the runtime was published ({what})")
        missing = sorted(set(expected) - seen)
        if missing:
            raise TreeError(f"{missing[0]} was removed after the runtime was published")
    finally:
        os.close(fd)


def verify_stat(version_dir: str, manifest: dict[str, Any]) -> None:
    """The cheap check: inode, mtime, ctime, size and mode of every entry as the manifest recorded
    them. A write, chmod, chown, rename, touch (even one that restores mtime: ctime moves) shows."""
    fd = os.open(version_dir, DIR_FLAGS)
    try:
        expected = manifest["stamps"]
        seen, folder = 0, None
        for path, st, _ in _covered(fd):
            seen += 1
            stamp = expected.get(path)
            if stamp is None:
                raise TreeError(f"{path} was added after the runtime was published")
            if stamp != _stamp(st):
                if not stat.S_ISDIR(st.st_mode):
                    raise TreeError(f"{path} changed after the runtime was published")
                folder = folder or path  # name a changed file inside it first, if there is one
        if seen != len(expected):
            raise TreeError("entries were removed after the runtime was published")
        if folder is not None:
            raise TreeError(f"{folder} changed after the runtime was published")
    finally:
        os.close(fd)

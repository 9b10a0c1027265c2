"""inotify, for the agent's own folders: which watched trees changed since last asked.

The runtime service watches published runtime trees (a job start then costs one read() when nothing
changed); the Slurm executor watches the folders its jobs' frames are written to. No inotify (or a
watch that cannot be added) means "always changed", so a caller falls back to looking: never
silently stale.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Iterator

IN_MODIFY, IN_ATTRIB, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x4, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
IN_Q_OVERFLOW, IN_ONLYDIR, IN_DONT_FOLLOW = 0x4000, 0x01000000, 0x02000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
              | IN_MOVE_SELF | IN_DONT_FOLLOW)
_EVENT = struct.Struct("iIII")


class TreeWatch:
    """Which watched trees changed since the last `changed()` call (inotify on every directory).

    If inotify is unavailable or a watch cannot be added, the tree counts as always changed, so the
    caller falls back to the stat check each time: never silently unverified."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        self.fd: int | None = fd if fd >= 0 else None
        self._owner: dict[int, str] = {}
        self._always: set[str] = set()
        self._pending: set[str] = set()

    def watch(self, key: str, root: str, recursive: bool = True) -> None:
        """Watch `root` (e.g. a runtime version folder) and, if `recursive`, every directory below it."""
        self.forget(key)
        if self.fd is None:
            self._always.add(key)
            return
        for directory in _directories(root) if recursive else [root]:
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), WATCH_MASK | IN_ONLYDIR)
            if wd < 0:
                self._always.add(key)
                return
            self._owner[wd] = key

    def forget(self, key: str) -> None:
        for wd in [w for w, k in self._owner.items() if k == key]:
            if self.fd is not None:
                self._libc.inotify_rm_watch(self.fd, wd)
            del self._owner[wd]
        self._always.discard(key)
        self._pending.discard(key)

    def changed(self) -> set[str]:
        """Keys whose tree saw any change (drains the queue)."""
        out = set(self._always) | self._pending
        self._pending.clear()
        while self.fd is not None:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    out |= set(self._owner.values())
                elif wd in self._owner:
                    out.add(self._owner[wd])
        return out

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _directories(root: str) -> Iterator[str]:
    yield root
    for dirpath, dirnames, _files in os.walk(root, followlinks=False):
        for d in dirnames:
            path = os.path.join(dirpath, d)
            if not os.path.islink(path):
                yield path

"""A holder's control socket, bound by its stage while it waits for a job, and renamed into the job's
state folder when the job comes.

bind() makes the socket's file, a new inode: on ext4 that has freed many inodes lately (every job's
files go in the end) each new one is searched for past the recently deleted ones, about a
millisecond of CPU on a busy host, on the way from the job's arrival to its end. A rename makes no
inode. So a waiting stage binds its socket ahead in a folder of the launcher's (root's only, under
the agent's private state, on the job folders' filesystem), and the holder renames it to
`holder.sock` in its job's folder: an AF_UNIX socket is found by its file, wherever that is moved.
The holder listens once it has it there, as before. Where the rename cannot be done (no folder given,
another filesystem, the file gone), the holder binds a new socket, as before.
"""

from __future__ import annotations

import fcntl
import os
import socket

PREFIX = "stage-"
SUFFIX = ".sock"
LOWEST_FD = 16


def _high(fd: int) -> int:
    """`fd` moved to LOWEST_FD or above, close-on-exec."""
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, LOWEST_FD)
    finally:
        os.close(fd)


def prepare(folder: str) -> None:
    """The launcher's folder, made (root's only) and emptied of what stages of an earlier launcher left
    (they die with it, by their death signal, before they can remove their files)."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith(PREFIX) and name.endswith(SUFFIX):
            try:
                os.unlink(os.path.join(folder, name))
            except FileNotFoundError:
                pass


class Ahead:
    """A socket bound (not listening) at `name` in the folder open at `dir_fd`."""

    def __init__(self, sock: socket.socket, dir_fd: int, name: str) -> None:
        self.sock, self.dir_fd, self.name = sock, dir_fd, name

    @classmethod
    def bind(cls, folder: str) -> "Ahead":
        """Both descriptors above the slots a stage's job puts its own in (0-4: the holder puts
        /dev/null there, launcher.py the job's pipes)."""
        dir_fd = _high(os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))
        try:
            sock = socket.socket(fileno=_high(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).detach()))
        except BaseException:
            os.close(dir_fd)
            raise
        name = PREFIX + os.urandom(8).hex() + SUFFIX
        try:
            sock.bind(f"/proc/self/fd/{dir_fd}/{name}")  # no path length limit
        except BaseException:
            sock.close()
            os.close(dir_fd)
            raise
        return cls(sock, dir_fd, name)

    def move_to(self, dir_fd: int, name: str) -> socket.socket | None:
        """The socket, its file now `name` in the folder open at `dir_fd` (replacing any file there);
        None if it could not be moved (then it is closed and its file removed)."""
        try:
            os.rename(self.name, name, src_dir_fd=self.dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            self.drop()
            return None
        os.close(self.dir_fd)
        self.dir_fd = -1
        return self.sock

    def drop(self) -> None:
        """Not used: closed, its file removed."""
        self.sock.close()
        if self.dir_fd >= 0:
            try:
                os.unlink(self.name, dir_fd=self.dir_fd)
            except OSError:
                pass
            os.close(self.dir_fd)
            self.dir_fd = -1


def placed(ahead: Ahead | None, dir_fd: int, name: str) -> socket.socket:
    """A socket bound at `name` in the folder open at `dir_fd`: `ahead` moved there, or (none, or it
    could not be moved) a new one bound there, in place of any file of that name."""
    moved = ahead.move_to(dir_fd, name) if ahead is not None else None
    if moved is not None:
        return moved
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        sock.bind(f"/proc/self/fd/{dir_fd}/{name}")
    except BaseException:
        sock.close()
        raise
    return sock

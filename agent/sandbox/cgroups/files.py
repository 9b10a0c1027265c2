"""cgroupfs file access for both backends: every failure names the file, so a refusal is actionable.

`mkdir` and `rmdir` are seams: the tests swap in a fake kernel that populates a directory the way
cgroupfs does.
"""

from __future__ import annotations

import os


class CgroupError(Exception):
    """A cgroup could not be set up, read or removed; the message names the file or device."""


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise CgroupError(f"cannot read {path}: {e.strerror}") from e


def write(path: str, value: str) -> None:
    """One write(2) per value, and no O_CREAT: only the kernel makes cgroup files."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as e:
        raise CgroupError(f"cannot open {path}: {e.strerror}") from e
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def keyvals(text: str) -> dict[str, int]:
    """Parse 'key value' lines (cpu.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def mkdir(path: str) -> None:
    """Make a cgroup directory (the kernel populates it). A seam (see above)."""
    os.mkdir(path)


def rmdir(path: str) -> None:
    """Remove a cgroup directory (cgroupfs allows rmdir despite its files). A seam like mkdir."""
    os.rmdir(path)

